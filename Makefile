# mailfleet — one multi-call binary, unit tests (cmocka), integration tests
# (real processes on 127.0.0.1), benches, lint (run first by `make test`).
# `make run`, `make run-kafka` and `make test` install what is missing first
# (ops/deps.sh).

PKGS     := libuv lmdb rdkafka gmime-3.0 libcurl openssl jansson inih libmicrohttpd libcrypt opendkim
CC       ?= cc
BUILD    ?= build
CFLAGS   ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers \
            -D_GNU_SOURCE
override LDLIBS += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread
pkg_cflags = $(shell pkg-config --cflags $1 2>/dev/null)
pkg_libs   = $(shell pkg-config --libs $1 2>/dev/null)

# common/ is built in layers.  Each layer sees only its own headers and those
# of the layers below it, and links only its own libraries: build/layers/<l>
# links a layer with everything below it and nothing else, so an include or a
# call that points up (or a library used in the wrong layer) fails the build.
#   base     logging, strings, time, ids, config, JSON, metrics, HTTP, kv
#   bus      topics and the bus over LMDB or Kafka
#   store    objects in files or S3 (SigV4)
#   mail     addresses, VERP, tokens, suppression, the record families
#   runtime  what a worker process is made of: config-built bus/store/tokens,
#            the batch loop, process-wide setup
LAYERS        := base bus store mail runtime
below_base    :=
below_bus     := base
below_store   := base
below_mail    := base bus store
below_runtime := base bus store mail
pkgs_base     := jansson inih libmicrohttpd lmdb openssl
pkgs_bus      := rdkafka lmdb openssl
pkgs_store    := libcurl openssl
pkgs_mail     := jansson openssl
pkgs_runtime  := $(PKGS)
layer_dirs     = $(foreach l,$1 $(below_$1),common/$l)
layer_pkgs     = $(sort $(foreach l,$1 $(below_$1),$(pkgs_$l)))
ALL_INC       := $(foreach l,$(LAYERS),-Icommon/$l) -Iworkers

# Workers, tests and benches see every layer; objects of common/<layer>/ see
# only their own layer and those below (set per pattern below).
INC := $(ALL_INC) $(call pkg_cflags,$(PKGS))
$(foreach l,$(LAYERS),$(eval $$(BUILD)/common/$l/%.o: INC := $(foreach d,$(call layer_dirs,$l),-I$d) $(call pkg_cflags,$(call layer_pkgs,$l))))

ASAN_CFLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
# libFuzzer harnesses (tests/fuzz/, `make fuzz`): clang, their own build,
# every object instrumented for coverage (fuzzer-no-link) under ASan+UBSan;
# only the harnesses link libFuzzer's main.  tests/fuzz/README.md says how
# to run them.
FUZZ_CC     := clang
FUZZ_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=undefined
FUZZ_TIME   ?= 3600
# ThreadSanitizer: its own build (it cannot be combined with ASan); run.sh
# starts and stops `mailfleet run` under it (tests/tsan.supp for third-party frames).
TSAN_CFLAGS := -O1 -g -fsanitize=thread -fno-omit-frame-pointer
COMMON_SRC  := $(sort $(wildcard common/*/*.c))
WORKER_SRC  := $(sort $(wildcard workers/*/*.c))
MAIN_SRC    := workers/mailfleet.c
UNIT_SRC    := $(sort $(wildcard tests/unit/test_*.c))
TOOL_SRC    := $(sort $(wildcard tests/tools/*.c))
FUZZ_SRC    := $(sort $(wildcard tests/fuzz/*.c))
BENCH_SRC   := $(sort $(wildcard bench/*.c))

COMMON_OBJ  := $(COMMON_SRC:%.c=$(BUILD)/%.o)
WORKER_OBJ  := $(WORKER_SRC:%.c=$(BUILD)/%.o)
MAIN_OBJ    := $(MAIN_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN    := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_BIN    := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
BENCH_BIN   := $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)

.PHONY: all layers deps deps-test deps-kafka run run-kafka test test-unit test-integration check-asan tsan bench clean lint \
        fuzz fuzz-run

all: $(BUILD)/mailfleet $(TOOL_BIN) $(BENCH_BIN) layers

# build/layers/<l>: the layer and those below it linked alone, with their own
# libraries only (every symbol must resolve there).
layers: $(LAYERS:%=$(BUILD)/layers/%)
$(BUILD)/layers/main.o:
	@mkdir -p $(dir $@)
	@echo 'int main(void) { return 0; }' | $(CC) $(CFLAGS) -x c -c - -o $@
define layer_rule
$$(BUILD)/layers/$1: $$(BUILD)/layers/main.o $$(filter $$(foreach d,$$(call layer_dirs,$1),$$(BUILD)/$$d/%),$$(COMMON_OBJ))
	@echo "  LAYER $1"
	@$$(CC) $$(CFLAGS) -o $$@ $$^ $$(call pkg_libs,$$(call layer_pkgs,$1)) -lm -lpthread
endef
$(foreach l,$(LAYERS),$(eval $(call layer_rule,$l)))

deps:
	@ops/deps.sh run
deps-test:
	@ops/deps.sh test
deps-kafka:
	@ops/deps.sh kafka

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC  $<"
	@$(CC) $(CFLAGS) $(INC) -MMD -MP -c $< -o $@

$(BUILD)/libmfcommon.a: $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^
$(BUILD)/libmfworkers.a: $(WORKER_OBJ)
	@mkdir -p $(dir $@)
	@rm -f $@ && ar rcs $@ $^

$(BUILD)/mailfleet: $(MAIN_OBJ) $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) $(INC) -o $@ $^ $(LDLIBS)

# Unit tests link against the worker and common libraries; cmocka only here.
$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) $(INC) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tools/%: tests/tools/%.c $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) $(INC) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: bench/%.c $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) $(INC) -o $@ $^ $(LDLIBS)

$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz.h $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a
	@mkdir -p $(dir $@)
	@echo "  LD  $@"
	@$(CC) $(CFLAGS) -fsanitize=fuzzer $(INC) -MMD -MP -o $@ $< $(BUILD)/libmfworkers.a $(BUILD)/libmfcommon.a $(LDLIBS)

run: deps
	@$(MAKE) --no-print-directory all
	@ops/run-dev.sh

# The fleet as on Kubernetes: a local Apache Kafka, one process per worker.
run-kafka: deps-kafka
	@$(MAKE) --no-print-directory all
	@ops/run-kafka.sh

test: deps-test
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory all $(UNIT_BIN)
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" build-asan/mailfleet $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%) $(TOOL_SRC:tests/tools/%.c=build-asan/tools/%)
	@$(MAKE) --no-print-directory tsan
	@$(MAKE) --no-print-directory fuzz
	@tests/run.sh

tsan:
	@$(MAKE) --no-print-directory BUILD=build-tsan CFLAGS="$(TSAN_CFLAGS)" build-tsan/mailfleet

fuzz:
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) is missing (ops/deps.sh test installs it)" >&2; exit 1; }
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" \
	    $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/fuzz/%)

# One campaign per harness (FUZZ_TIME seconds each; FUZZ_HARNESSES narrows):
# executions, coverage and crashes for tests/fuzz/RESULTS.md.
fuzz-run: fuzz
	@tests/fuzz/campaign.sh $(FUZZ_TIME) $(FUZZ_HARNESSES)

check-asan: deps-test
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_CFLAGS)" build-asan/mailfleet $(UNIT_SRC:tests/unit/%.c=build-asan/tests/%)
	@TESTS_ONLY=asan tests/run.sh

bench: deps-test all
	@bench/run.sh

# Static checks; any finding fails (make test runs this first).  yamllint
# (strict, ops/.yamllint) on our YAML, all of which lives in ops/; cppcheck
# on our C without the system headers (tests/lint/cppcheck.h spells out the
# library macros that matter, tests/lint/cppcheck.supp lists the checks we do
# not use, each with why).  A false positive is suppressed inline:
# // cppcheck-suppress <id> ; <why>.
CPPCHECK_FLAGS := -q -j2 --std=c11 -D_GNU_SOURCE $(ALL_INC) \
                  --include=tests/lint/cppcheck.h --enable=warning,portability,performance,style \
                  --inline-suppr --suppressions-list=tests/lint/cppcheck.supp --error-exitcode=1 \
                  --template='{file}:{line}: {severity}: {message} [{id}]'
lint:
	@echo "  LINT yamllint"
	@yamllint -s -c ops/.yamllint ops/
	@echo "  LINT cppcheck"
	@command -v cppcheck >/dev/null || { echo "lint: cppcheck is missing (ops/deps.sh test installs it)" >&2; exit 1; }
	@cppcheck $(CPPCHECK_FLAGS) common/ workers/ tests/unit/ tests/tools/ tests/fuzz/ bench/

clean:
	rm -rf build build-asan build-tsan build-fuzz

-include $(shell find build build-asan build-tsan build-fuzz -name '*.d' 2>/dev/null)
