# Release: one version string, the release rockspec, the source rock and its offline check.
#   make release-rockspec  writes rockspec/llmchat-$(VERSION)-1.rockspec from the dev rockspec
#   make dist              packs build/dist/llmchat-$(VERSION)-1.src.rock from the checkout
#                          (no network; the checkout's own build is not touched)
#   make dist-check        installs that rock offline into temporary trees with
#                          luarocks --lua-version=5.1 ... 5.4, then requires it and makes a
#                          request to a dead port with each Lua (LuaJIT loads the 5.1 tree)
# The version lives in one place: LLMCHAT_VERSION in src/core.c (spec/version_spec.lua
# checks that the rockspec, the CHANGELOG, the server and the CLI agree).

VERSION       := $(shell sed -n 's/^.define LLMCHAT_VERSION "\(.*\)"$$/\1/p' src/core.c)
ROCKSPEC_DEV  := rockspec/llmchat-dev-1.rockspec
ROCKSPEC_REL  := rockspec/llmchat-$(VERSION)-1.rockspec
DIST_DIR      := build/dist
DIST_ROCK     := $(DIST_DIR)/llmchat-$(VERSION)-1.src.rock
DIST_LUAS     ?= 5.1 5.2 5.3 5.4 luajit

.PHONY: release-rockspec dist dist-check version

version:
	@echo $(VERSION)

# the release rockspec is the dev one with a version and a source tag
release-rockspec:
	@test -n "$(VERSION)" || { echo "no LLMCHAT_VERSION in src/core.c" >&2; exit 1; }
	{ echo '-- Release rockspec: generated from llmchat-dev-1.rockspec by `make release-rockspec`'; \
	  echo '-- (the version and the source tag differ; spec/version_spec.lua checks the rest agrees).'; \
	  sed -e 's/^version = "dev-1"$$/version = "$(VERSION)-1"/' \
	      -e 's|^\(  url = "git+https://github.com/llmchat/llmchat.git",\)$$|\1\n  tag = "v$(VERSION)",|' \
	      $(ROCKSPEC_DEV); } > $(ROCKSPEC_REL).tmp
	grep -q '^version = "$(VERSION)-1"$$' $(ROCKSPEC_REL).tmp && grep -q '^  tag = "v$(VERSION)",$$' $(ROCKSPEC_REL).tmp
	mv $(ROCKSPEC_REL).tmp $(ROCKSPEC_REL)

dist:
	@sh .ci/dist "$(VERSION)" "$(DIST_DIR)"

dist-check: dist
	@sh .ci/dist-check "$(DIST_ROCK)" "$(VERSION)" $(DIST_LUAS)
