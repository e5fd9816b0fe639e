"""The verl adapter's tests run in `.venv-verl` (`make test-verl`): verl 0.9.1 pins transformers<5.11, which
the main environment does not satisfy. Where verl is not installed they are not collected."""

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("verl") is not None else ["test_*.py"]
