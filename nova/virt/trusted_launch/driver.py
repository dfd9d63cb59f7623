"""``compute_driver = trusted_launch.driver.TrustedLibvirtDriver`` (re-export)."""

from trusted_launch.compute.driver import TrustedLibvirtDriver

__all__ = ["TrustedLibvirtDriver"]
