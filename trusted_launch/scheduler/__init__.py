"""The scheduler party: a Nova filter that places servers by security profile.

:mod:`.levels` orders profile names, :mod:`.requirement` finds the profile a
request asks for, :mod:`.security_profile_filter` holds the filter class and
:mod:`.extra_specs` the flavor extra-spec validator for the Nova API.
"""
