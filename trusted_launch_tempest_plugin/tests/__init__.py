"""The plugin's tests (TrustedLaunchTempestPlugin.load_tests points tempest here)."""
