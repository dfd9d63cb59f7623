"""TTP integration tests: the real server process, real swtpm TPMs, real databases."""

from tests.fixtures.swtpm import (  # noqa: F401
    booted_swtpm,
    swtpm,
    swtpm_factory,
    swtpm_state_cache,
)
from tests.fixtures.ttp import (  # noqa: F401
    other_test_ca,
    ttp_database_url,
    ttp_server,
    ttp_test_ca,
)
