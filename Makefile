# Two commands do everything on a fresh machine:  make demo   and   make test
# Both create (or reuse) the virtual environment .venv with the pinned dependencies first.
.PHONY: setup demo test book runs export clean-nbs bench checkpoints checkpoints-detector checkpoints-pose
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= demo_out

setup:
	@bash ci/setup.sh

# make demo: the shipped networks of data/checkpoints/; make demo TRAIN=1: trains them into $(DEMO_OUT)/runs/ first
demo: setup
	$(BIN)/cosypose-nb demo --out $(DEMO_OUT) $(if $(TRAIN),--train)

test: setup
	@bash ci/test.sh

# The book: the chapters executed (cached) with the experiments' run folders (book/runs/, made by `runs` first
# when missing). BOOK_TOC=... builds another table of contents. Then `pytest tests/test_book.py` checks it in chromium.
book: setup
	@bash ci/book.sh

# The experiments of book/experiments/ into book/runs/NAME/ (finished runs are kept; RUNS_ARGS=--force runs them again)
runs: setup
	$(BIN)/cosypose-nb experiment $(notdir $(basename $(wildcard book/experiments/*.ipynb))) --out book/runs $(RUNS_ARGS)

export: setup
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The shipped CPU models in data/checkpoints/ (each made into a new folder, then put in place; the old one kept as .old).
# checkpoints-detector: the Mask R-CNN detector (record, train the `cpu` preset in five runs, the last three at 480 x 640, measure; ci/checkpoints_detector.sh);
# checkpoints-pose: the coarse and refiner pose networks (record, train the `cpu` preset, measure; ci/checkpoints_pose.sh).
checkpoints: checkpoints-detector checkpoints-pose

checkpoints-detector: setup
	@bash ci/checkpoints_detector.sh

checkpoints-pose: setup
	@bash ci/checkpoints_pose.sh
