"""Horizon's WSGI application with its collected static files served by WhiteNoise.

gunicorn loads this in the Horizon virtualenv (``.horizon-venv``); Horizon
itself serves static files only with ``DEBUG = True``, which a real server
must not run.
"""

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from whitenoise import WhiteNoise

application = WhiteNoise(get_wsgi_application(), root=settings.STATIC_ROOT,
                         prefix=settings.STATIC_URL)
