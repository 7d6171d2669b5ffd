# make demo: set up .venv and run the offline demo end to end.
# make test: set up .venv and run the whole test suite.
# make report: the HTML report of the finished demo (results/report.html).
# make test-slurm: start a local one-node SLURM (root, Debian) and run the workflow on it.
# make slurm-profile: install profiles/slurm as the named profile, for `snakemake --profile slurm`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2

.PHONY: setup demo report test test-slurm slurm-profile bench lint clean

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

# `snakemake --profile NAME` looks for a folder NAME in the working directory, then in Snakemake's
# user and site config folders (platformdirs: $XDG_CONFIG_HOME/snakemake, else ~/.config/snakemake,
# on Linux), never under profiles/. This links profiles/slurm into the user folder, asking the
# Python that runs Snakemake where that is; a link, so that edits to profiles/slurm take effect.
# Someone else's `slurm` profile there is left alone.
SNAKEMAKE_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
slurm-profile:
	@dir=$$($(SNAKEMAKE_PYTHON) -c 'from snakemake.common import get_appdirs; print(get_appdirs().user_config_dir)' 2>/dev/null) || \
		{ echo "error: $(SNAKEMAKE_PYTHON) has no Snakemake: make slurm-profile SNAKEMAKE_PYTHON=<its python>" >&2; exit 1; }; \
	link="$$dir/slurm"; target="$(CURDIR)/profiles/slurm"; \
	if [ -L "$$link" ] && [ "$$(readlink "$$link")" = "$$target" ]; then echo "$$link -> $$target (already there)"; exit 0; fi; \
	if [ -e "$$link" ] || [ -L "$$link" ]; then \
		echo "error: $$link exists and is not this profile: remove it, or run snakemake --profile profiles/slurm" >&2; exit 1; fi; \
	mkdir -p "$$dir" && ln -s "$$target" "$$link" && \
	echo "$$link -> $$target: from this folder, snakemake --profile slurm runs the workflow on SLURM"

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
