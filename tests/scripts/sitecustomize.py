"""For test_contract: LAMBDA_HAT_TEST_BUMP=sgld raises that sampler's code version by one, as an edit to samplers/sgld.py with its version bumped would."""

import os

if os.environ.get("LAMBDA_HAT_TEST_BUMP"):
    import lambda_hat.llc.samplers as s

    s.VERSIONS[os.environ["LAMBDA_HAT_TEST_BUMP"]] += 1
