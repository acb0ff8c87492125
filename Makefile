# `make test` and `make demo` set up .venv from the requirements on first use.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: test demo crosscheck clean-venv

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests -m "not original"

# The authors' code executed beside ours (docs/original.md): make crosscheck ORIGINAL=/path/to/semisup-semseg
crosscheck: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests/crosscheck -m original --original "$(ORIGINAL)"

demo: $(STAMP)
	$(VENV)/bin/python demo.py

clean-venv:
	rm -rf $(VENV)
