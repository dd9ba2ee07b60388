# SSE parser: C unit test, differential fuzzer, benchmark (the parser is plain C, no Lua).
#   make test-sse-c            unit test under ASan + UBSan (gcc)
#   make fuzz-sse FUZZ_TIME=60 libFuzzer + ASan + UBSan (clang), corpus fuzz/sse_corpus
#   make bench-sse             events/s over ~20,000 OpenAI chunks fed in 16 KiB reads

FUZZ_TIME   ?= 60
FUZZ_CC     ?= clang
SSE_TEST_CC ?= gcc
SSE_WARN    := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -Wmissing-prototypes -Wshadow \
               -Wstrict-prototypes -pedantic

.PHONY: test-sse-c fuzz-sse bench-sse

# sse_test.c includes src/sse.c itself (to hook realloc for the out-of-memory tests)
build/test/sse_test: test/sse_test.c src/sse.c src/sse.h src/buf.h mk/sse.mk
	@mkdir -p build/test
	$(SSE_TEST_CC) $(SSE_WARN) -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
	  -fno-sanitize-recover=all -Isrc test/sse_test.c -o $@

test-sse-c: build/test/sse_test
	./build/test/sse_test

build/fuzz/sse_fuzz: fuzz/sse_fuzz.c src/sse.c src/sse.h src/buf.h mk/sse.mk
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(SSE_WARN) -g -O1 -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -Isrc fuzz/sse_fuzz.c src/sse.c -o $@

# New inputs go to build/fuzz/sse_corpus (the committed seeds stay small and reviewed);
# crash reproducers land in build/fuzz/.
fuzz-sse: build/fuzz/sse_fuzz
	@mkdir -p build/fuzz/sse_corpus
	./build/fuzz/sse_fuzz -max_total_time=$(FUZZ_TIME) -max_len=4096 \
	  -artifact_prefix=build/fuzz/ build/fuzz/sse_corpus fuzz/sse_corpus

build/bench/sse_bench: bench/sse_bench.c src/sse.c src/sse.h src/buf.h mk/sse.mk
	@mkdir -p build/bench
	$(CC) $(SSE_WARN) -O2 -Isrc bench/sse_bench.c src/sse.c -o $@

bench-sse: build/bench/sse_bench
	./build/bench/sse_bench
