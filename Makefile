# mailfleet — one multi-call binary, unit tests (cmocka), integration tests
# (real processes on 127.0.0.1), benches.  `make run`, `make run-kafka` and
# `make test` install what is missing first (ops/deps.sh).

PKGS     := libuv lmdb rdkafka gmime-3.0 libcurl openssl jansson inih libmicrohttpd libcrypt opendkim
CC       ?= cc
CFLAGS   ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
            -D_GNU_SOURCE -Icommon -Iworkers $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
override LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread

BUILD    ?= build
ASAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
COMMON_SRC  := $(sort $(wildcard common/*.c))
WORKER_SRC  := $(sort $(wildcard workers/*/*.c))
MAIN_SRC    := workers/mailfleet.c
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
TOOL_SRC    := $(sort $(wildcard tests/tools/*.c))
BENCH_SRC   := $(sort $(wildcard bench/*.c))

COMMON_OBJ  := $(COMMON_SRC:%.c=$(BUILD)/%.o)
WORKER_OBJ  := $(WORKER_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ    := $(MAIN_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_BIN    := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_BIN   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all deps deps-test deps-kafka run run-kafka test test-unit test-integration check-asan bench clean lint

all: $(BUILD)/mailfleet $(TOOL_BIN) $(BENCH_BIN)

deps:
	@ops/deps.sh run
deps-test:
	@ops/deps.sh test
deps-kafka:
	@ops/deps.sh kafka

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libmfcommon.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^
$(BUILD)/libmfworkers.a: $(WORKER_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/mailfleet: $(MAIN_OBJ) $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# Unit tests link against the worker and common libraries; cmocka only here.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	@ops/run-dev.sh

# The fleet as on Kubernetes: a local Apache Kafka, one process per worker.
run-kafka: deps-kafka
	@$(MAKE) --no-print-directory all
	@ops/run-kafka.sh

test: deps-test
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" build-asan/mailfleet $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%) $(TOOL_SRC:tests/tools/%.c=build-asan/tools/%)
	@tests/run.sh

check-asan: deps-test
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" build-asan/mailfleet $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	@TESTS_ONLY=asan tests/run.sh

bench: deps-test all
	@bench/run.sh

lint:
	@yamllint -s ops/ || true

clean:
	rm -rf build build-asan

-include $(shell find build build-asan -name '*.d' 2>/dev/null)
