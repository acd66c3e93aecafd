# The two commands of the README: `make run` and `make test`. Both set up .venv first.
SHELL := /bin/bash
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt
PROJECT ?= $(CURDIR)/.tuneloop/sample
PORT ?= 8501
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := true
export SCARF_NO_ANALYTICS := true
export UNSTRUCTURED_DISABLE_NOTICE := 1
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false
export STREAMLIT_BROWSER_GATHER_USAGE_STATS := false

.PHONY: setup run test reliability check lint typecheck bench browser-deps office-deps ocr-deps llm-server-deps interop-deps sample clean

$(STAMP): pyproject.toml requirements.txt requirements-nodeps.txt constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -r requirements.txt
	$(PIP) --no-deps -r requirements-nodeps.txt
	$(PIP) --no-deps --no-build-isolation -e .
	@touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the browser test (Playwright cannot download browsers offline).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)) \
	      || echo "warning: could not install chromium; the browser test will be skipped"; \
	  else echo "warning: chromium missing and not root; the browser test will be skipped"; fi; }

# LibreOffice (headless, no GUI) converts legacy .doc/.ppt for unstructured. Optional: without
# it those files get a per-file error that says to save them as .docx/.pptx.
office-deps:
	@command -v soffice >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libreoffice-writer-nogui libreoffice-impress-nogui >/dev/null 2>&1 \
	      || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends libreoffice-writer-nogui libreoffice-impress-nogui >/dev/null)) \
	      || echo "warning: could not install LibreOffice; .doc/.ppt files will be reported as unsupported"; \
	  else echo "note: LibreOffice missing and not root; .doc/.ppt files will be reported as unsupported"; fi; }

# Tesseract (and poppler's pdftoppm) read text from images and scanned PDF pages (unstructured's
# ocr_only). Optional: without them an image or a PDF with no text layer gets a per-file error
# that says what to install.
ocr-deps:
	@{ command -v tesseract && command -v pdftoppm; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tesseract-ocr tesseract-ocr-eng poppler-utils >/dev/null 2>&1 \
	      || (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends tesseract-ocr tesseract-ocr-eng poppler-utils >/dev/null)) \
	      || echo "warning: could not install tesseract-ocr/poppler-utils; images and scanned PDFs will be reported as needing OCR"; \
	  else echo "note: tesseract-ocr/poppler-utils missing and not root; images and scanned PDFs will be reported as needing OCR"; fi; }

# llama-cpp-python's OpenAI-compatible server (compiled from source on first install). Optional:
# without it the test against a real local server is skipped. Built for AVX2, not for the build
# machine's own CPU (GGML_NATIVE): a virtual machine can list AMX in /proc/cpuinfo and still fault
# on its first AMX instruction (ldtilecfg: the server died on its first request), and a wheel from
# pip's cache may have been built on another machine, so none is taken from there.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
llm-server-deps: setup
	@$(BIN)/python -c "import llama_cpp, uvicorn" 2>/dev/null || { \
	  echo "building llama-cpp-python (first time only, about 10 min on 2 cores)"; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) --no-cache-dir -r requirements-llm-server.txt >/dev/null 2>&1 \
	    || echo "warning: could not install llama-cpp-python[server]; the real-server ingest test will be skipped"; }

# An older transformers/peft stack in .venv-old/ (transformers 4.57, peft 0.17, the same CPU torch) for
# tests/interop/test_model_export.py, which checks that exported models load there too (about 35 s
# with pip's cache warm). Optional: without it that test is skipped.
interop-deps:
	@test -f .venv-old/.installed || { \
	  $(PY) -m venv .venv-old && .venv-old/bin/pip install --disable-pip-version-check -q \
	    "transformers==4.57.*" "peft==0.17.*" torch==2.13.0 "numpy<2.5" >/dev/null 2>&1 \
	    && touch .venv-old/.installed || echo "warning: could not install the older stack in .venv-old; the interop test will be skipped"; }

sample: setup
	$(BIN)/tuneloop sample --project "$(PROJECT)"

run: setup office-deps ocr-deps sample
	$(BIN)/tuneloop ui --project "$(PROJECT)" --port $(PORT)

test: setup browser-deps office-deps ocr-deps llm-server-deps interop-deps
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check .

typecheck: setup
	$(BIN)/mypy store scoring ingest analysis training models workflows tuneloop app scale

check: lint typecheck test

# The reliability suite in full: more kill -9 rounds per stage and a longer concurrent-writer window
# (`make test` runs it once per stage with a short window). Prints one table at the end.
reliability: setup
	TUNELOOP_RELIABILITY_ROUNDS=$${ROUNDS:-5} TUNELOOP_RELIABILITY_SECONDS=$${SECONDS_:-120} \
	  $(BIN)/python -m pytest -q -p no:cacheprovider tests/reliability

bench: setup
	$(BIN)/python -m tests.bench

clean:
	rm -rf $(VENV) .tuneloop .pytest_cache
