# JSON decoder (src/jdecode.c over src/jscan.c): libFuzzer target.
#   make fuzz-jdecode FUZZ_TIME=60    libFuzzer + ASan + UBSan (clang), links liblua5.4;
#                                     seeds: fuzz/stream_corpus (JSON chunks), read only
# The Lua side is covered by spec/json_diff_spec.lua.

FUZZ_TIME     ?= 60
FUZZ_CC       ?= clang
JDECODE_WARN  := -std=c99 -D_GNU_SOURCE -Wall -Wextra -Werror -Wmissing-prototypes -Wshadow \
                 -Wstrict-prototypes -pedantic
JDECODE_SRCS  := src/jdecode.c src/jscan.c
JDECODE_HDRS  := src/jdecode.h src/jscan.h src/compat.h
JDECODE_LUA_CFLAGS = $(shell $(PKG_CONFIG) --cflags lua5.4)
JDECODE_LUA_LIBS   = $(shell $(PKG_CONFIG) --libs lua5.4)

.PHONY: fuzz-jdecode

build/fuzz/jdecode_fuzz: test/fuzz_jdecode.c $(JDECODE_SRCS) $(JDECODE_HDRS) mk/jdecode.mk
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(JDECODE_WARN) -g -O1 -fsanitize=fuzzer,address,undefined \
	  -fno-sanitize-recover=undefined -Isrc $(JDECODE_LUA_CFLAGS) test/fuzz_jdecode.c \
	  $(JDECODE_SRCS) $(JDECODE_LUA_LIBS) -lm -o $@

# New inputs go to build/fuzz/jdecode_corpus; crash reproducers land in build/fuzz/.
fuzz-jdecode: build/fuzz/jdecode_fuzz
	@mkdir -p build/fuzz/jdecode_corpus
	./build/fuzz/jdecode_fuzz -max_total_time=$(FUZZ_TIME) -max_len=8192 -rss_limit_mb=2048 \
	  -malloc_limit_mb=512 -artifact_prefix=build/fuzz/ build/fuzz/jdecode_corpus fuzz/stream_corpus
