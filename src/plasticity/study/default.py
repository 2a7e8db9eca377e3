"""The default study: what `plasticity study` runs with no argument (offline, CPU, minutes).

It exists once, as the package file ``default.yaml`` next to this module (shipped in the wheel): three weight
decays on a tiny Llama over packaged BBC News text. The token budget is far below 20 TPP (a 0.7M-parameter model
at 20 TPP is 14M tokens, ~35 min per run on one AVX2 core), so the default finishes in minutes; at this scale the
mechanistic effects of weight decay are visible, downstream differences are noise.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_STUDY_FILE = Path(__file__).with_name("default.yaml")
