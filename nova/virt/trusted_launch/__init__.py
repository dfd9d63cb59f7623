"""Out-of-tree shim: lets Nova's loader find trusted-launch's compute driver.

``nova.virt.driver.load_compute_driver`` imports ``'nova.virt.' +
CONF.compute_driver``; this package is installed into Nova's ``nova/virt``
directory so that ``compute_driver = trusted_launch.driver.TrustedLibvirtDriver``
resolves. It holds no code of its own (no ``nova/__init__.py`` or
``nova/virt/__init__.py`` is shipped).
"""
