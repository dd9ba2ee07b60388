# Stream assembly (src/jscan.c, src/stream.c, src/stream_cache.c: plain C, no Lua): benchmark and fuzzer.
#   make bench-assembly              chunks/s over 20,000 realistic chunks, one core
#   make fuzz-stream FUZZ_TIME=60    libFuzzer + ASan + UBSan (clang), seeds fuzz/stream_corpus
#   make test-stream-c               the caches and out-of-memory paths, C, ASan + UBSan (gcc)
# The Lua side is covered by spec/stream_assembly_spec.lua and spec/json_diff_spec.lua.

FUZZ_TIME     ?= 60
FUZZ_CC       ?= clang
STREAM_WARN   := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -Wmissing-prototypes -Wshadow \
                 -Wstrict-prototypes -pedantic
STREAM_SRCS   := src/stream.c src/stream_cache.c src/jscan.c
STREAM_HDRS   := src/stream.h src/stream_cache.h src/jscan.h src/buf.h

.PHONY: bench-assembly fuzz-stream

build/bench/assembly_bench: bench/assembly_bench.c $(STREAM_SRCS) $(STREAM_HDRS) mk/stream.mk
	@mkdir -p build/bench
	$(CC) $(STREAM_WARN) -O2 -Isrc bench/assembly_bench.c $(STREAM_SRCS) -o $@

bench-assembly: build/bench/assembly_bench
	./build/bench/assembly_bench

build/fuzz/stream_fuzz: fuzz/stream_fuzz.c $(STREAM_SRCS) $(STREAM_HDRS) mk/stream.mk
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(STREAM_WARN) -g -O1 -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -Isrc fuzz/stream_fuzz.c $(STREAM_SRCS) -o $@

# New inputs go to build/fuzz/stream_corpus; the committed seeds stay small and reviewed.
fuzz-stream: build/fuzz/stream_fuzz
	@mkdir -p build/fuzz/stream_corpus
	./build/fuzz/stream_fuzz -max_total_time=$(FUZZ_TIME) -max_len=8192 -rss_limit_mb=1024 \
	  -malloc_limit_mb=256 -artifact_prefix=build/fuzz/ build/fuzz/stream_corpus fuzz/stream_corpus

# C tests of the caches and the out-of-memory paths (test/stream_test.c includes the sources
# itself, to hook malloc/calloc/realloc), under ASan + UBSan (gcc)
STREAM_TEST_CC ?= gcc
.PHONY: test-stream-c
build/test/stream_test: test/stream_test.c $(STREAM_SRCS) $(STREAM_HDRS) mk/stream.mk
	@mkdir -p build/test
	$(STREAM_TEST_CC) $(STREAM_WARN) -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -fno-sanitize-recover=all -Isrc test/stream_test.c -o $@

test-stream-c: build/test/stream_test
	./build/test/stream_test
