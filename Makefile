# Two commands do all the set-up on a fresh machine: `make serve` (the MONAI Label server on the bundled
# sample studies with the shipped model) and `make test` (lint and the full test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
STUDIES ?= apps/scoliosis/sample_studies
THREADS ?= 2
MODEL ?=

.PHONY: setup test lint serve benchmark benchmark-server orthanc clean

$(VENV)/.installed: pyproject.toml requirements/server.txt requirements/monailabel.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[server,slicer,dev]" -r requirements/server.txt
	$(PY) -m pip install --quiet --no-deps -r requirements/monailabel.txt
	touch $@

setup: $(VENV)/.installed

lint: setup
	$(PY) -m ruff check lib tests apps benchmarks slicer_extension

test: lint
	$(PY) -m pytest -q

# The MONAI Label server: STUDIES=/folder or STUDIES=http://dicomweb/url, MODEL=file, HOST, PORT, THREADS.
# Through `python -m monailabel.main`: the venv's `monailabel` script runs whichever python is first on PATH.
serve: setup
	@case "$(HOST)" in 127.0.0.1|localhost|::1) ;; *) echo "WARNING: HOST=$(HOST) lets other machines reach \
	this server, which has no login and serves patient images: do this only on a trusted network (see \
	apps/scoliosis/README.md, 'Binding another host')." >&2 ;; esac
	OMP_NUM_THREADS=$(THREADS) $(PY) -m monailabel.main start_server --app apps/scoliosis --studies "$(STUDIES)" \
		--host $(HOST) --port $(PORT) --conf threads $(THREADS) $(if $(MODEL),--conf model_path "$(MODEL)")

# Round-trip time and throughput of /infer on this machine (starts its own server on a free port).
benchmark-server: setup
	OMP_NUM_THREADS=$(THREADS) $(PY) apps/scoliosis/benchmark.py --threads $(THREADS) $(if $(MODEL),--model "$(MODEL)")

# A local PACS to try the DICOMweb mode: Orthanc with DICOMweb on 127.0.0.1:$(ORTHANC_PORT) holding the sample films
# as DICOM DX (Ctrl-C stops it); installs the Debian packages orthanc and orthanc-dicomweb when missing (as root).
ORTHANC_PORT ?= 8042
orthanc: setup
	@if ! command -v Orthanc >/dev/null || [ ! -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update && apt-get install -y orthanc orthanc-dicomweb; \
		else echo "Orthanc is missing: sudo apt-get install orthanc orthanc-dicomweb" >&2; exit 1; fi; \
	fi
	$(PY) apps/scoliosis/tools/local_pacs.py --port $(ORTHANC_PORT)

benchmark: setup
	$(VENV)/bin/spinecascade benchmark --images $(STUDIES) --threads $(THREADS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
