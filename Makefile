# Two commands do everything on a fresh machine:  make demo   and   make test
# Both create (or reuse) the virtual environment .venv with the pinned dependencies first.
.PHONY: setup demo test book export clean-nbs bench
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

setup:
	@bash ci/setup.sh

demo: setup
	$(BIN)/cosypose-nb demo --out $(DEMO_OUT)

test: setup
	@bash ci/test.sh

book: setup
	@bash ci/book.sh

export: setup
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done
