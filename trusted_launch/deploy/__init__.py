"""Deployment configuration shared by every installer (DevStack plugin, tools/run-cloud.sh).

The code here edits an operator's existing nova.conf and writes ttp.conf; the
DevStack plugin and the sandbox cloud both call it through
``trusted-launch configure``, so one piece of code defines what a deployment's
configuration looks like.
"""
