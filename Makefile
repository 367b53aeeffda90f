# tidewater — every target installs what it needs.
#
#   make demo    the main job on real sensor data, on the embedded log
#   make test    fmt, clippy, and every test (unit, end-to-end, the real-data demo counts)
#   make bench   criterion benchmarks (WASM vs native, batch sizes, idempotency on/off)
#   make plugins build the example processors into target/plugins/*.wasm
#   make demo-kafka  the main job through a real Apache Kafka broker
#   make kafka-up / kafka-down   a local single-node Kafka (KRaft) on 127.0.0.1
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
PLUGIN_DIR := $(ROOT)/target/plugins
PLUGINS := enrich threshold probe
DATA_DIR ?= $(ROOT)/.tidewater
TW := TIDEWATER_DATA_DIR=$(DATA_DIR) $(BIN)

KAFKA := kafka/kafka.sh

.PHONY: help demo demo-kafka test bench plugins build tools check-data clean kafka-up kafka-down

help:
	@sed -n '3,10p' Makefile | sed 's/^# \{0,1\}//'

## Toolchain: the wasm32-wasip2 target (rustup), rustfmt and clippy.
tools:
	@command -v rustup >/dev/null || { echo "error: rustup is needed (https://rustup.rs)"; exit 1; }
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy

plugins: tools
	cd plugins && cargo build --release --target wasm32-wasip2 --locked
	@mkdir -p $(PLUGIN_DIR)
	@for p in $(PLUGINS); do cp $(CARGO_TARGET_DIR)/wasm32-wasip2/release/$$p.wasm $(PLUGIN_DIR)/$$p.wasm; done
	@ls -l $(PLUGIN_DIR)/*.wasm

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

## A single-node Apache Kafka (KRaft) on 127.0.0.1; its jars come from Maven Central.
kafka-up:
	@$(KAFKA) up

kafka-down:
	@$(KAFKA) down

test: tools plugins
	cargo fmt --all -- --check
	cd plugins && cargo fmt --all -- --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	cd plugins && cargo clippy --release --locked --all-targets -- -D warnings
	cd plugins && cargo test --release --locked
	cargo build --release --locked --workspace --all-targets
	@$(KAFKA) up >/dev/null
	status=0; TIDEWATER_REQUIRE_KAFKA=1 cargo test --release --locked --workspace || status=$$?; $(KAFKA) down; exit $$status

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

bench: tools plugins
	cargo bench --locked -p tidewater-host --bench pipeline
	@$(KAFKA) up >/dev/null
	status=0; cargo bench --locked -p tidewater-host --bench kafka || status=$$?; $(KAFKA) down; exit $$status

clean:
	-$(KAFKA) reset
	rm -rf $(CARGO_TARGET_DIR) $(PLUGIN_DIR) plugins/target $(DATA_DIR) $(KDATA_DIR)
