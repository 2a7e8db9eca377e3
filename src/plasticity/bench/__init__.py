"""`plasticity bench`: throughput of the hot paths against their plain baselines (suite) and its command (cli)."""
