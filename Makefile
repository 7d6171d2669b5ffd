# make demo: set up .venv and run the offline demo end to end.
# make test: set up .venv and run the whole test suite.
# make report: the HTML report of the finished demo (results/report.html).
# make test-slurm: start a local one-node SLURM (root, Debian) and run the workflow on it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2

.PHONY: setup demo report test test-slurm bench lint clean

setup: $(STAMP)

# torch is pinned (pyproject.toml): here pip takes the CPU wheel on disk, on a cluster PyPI's CUDA build.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,demo]'
	touch $@

# The greedy scheduler: the ILP one (PuLP is installed) solves a problem at every scheduling step,
# and the demo's one-core jobs leave it nothing to pack better (Snakemake's own CPU per job: 0.87 s
# with ILP, 0.65 s greedy). After a crash the same command resumes (README "After a crash").
demo: $(STAMP)
	$(BIN)/snakemake --configfile config/demo.yaml --cores $(CORES) --printshellcmds --scheduler greedy
	@echo "Demo done: see results/tables/ and results/plots/"

# Every table and plot of the demo with its caption (workflow/report/), in one self-contained page.
report: $(STAMP)
	$(BIN)/snakemake --configfile config/demo.yaml --report results/report.html

test: $(STAMP)
	$(BIN)/python -m pytest -q

# scripts/slurm/start.sh installs and starts the cluster (idempotent); it is stopped afterwards
# unless KEEP_SLURM=1. The timeout bounds the whole run: a stuck status query cannot hang CI.
test-slurm: $(STAMP)
	scripts/slurm/start.sh
	WEIGHTSPACE_SLURM_TESTS=1 timeout -k 30 2400 $(BIN)/python -m pytest -q -rs tests/slurm; \
	rc=$$?; [ -n "$(KEEP_SLURM)" ] || scripts/slurm/stop.sh; exit $$rc

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile config/demo.yaml
	@# the paper config's ISEAR files are exported by each user: empty placeholders stand in
	tmp=$$(mktemp -d) && mkdir -p $$tmp/data/isear && printf 'text,emotion\n' > $$tmp/data/isear/train.csv && \
		cp $$tmp/data/isear/train.csv $$tmp/data/isear/test.csv && \
		$(BIN)/snakemake --lint --directory $$tmp --configfile config/config.yaml; rc=$$?; rm -rf $$tmp; exit $$rc

clean:
	rm -rf results logs .snakemake
