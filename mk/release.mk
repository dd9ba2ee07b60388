# Release: one version string, the release rockspecs, the source rocks and their offline check.
#   make release-rockspec  writes rockspec/<rock>-$(VERSION)-1.rockspec from each dev rockspec
#                          (llmchat, and llmchat-testing: the bundled test server)
#   make dist              packs build/dist/<rock>-$(VERSION)-1.src.rock from the checkout
#                          (no network; the checkout's own build is not touched)
#   make dist-check        installs the llmchat rock offline into temporary trees with
#                          luarocks --lua-version=5.1 ... 5.4, then requires it and makes a
#                          request to a dead port with each Lua (LuaJIT loads the 5.1 tree);
#                          installs the llmchat-testing rock for 5.4 and chats with its server
# The version lives in one place: LLMCHAT_VERSION in src/core.c (spec/version_spec.lua
# checks that the rockspecs, the CHANGELOG, the README, the server and the CLI agree).

VERSION       := $(shell sed -n 's/^.define LLMCHAT_VERSION "\(.*\)"$$/\1/p' src/core.c)
RELEASE_ROCKS := llmchat llmchat-testing
DIST_DIR      := build/dist
DIST_ROCK     := $(DIST_DIR)/llmchat-$(VERSION)-1.src.rock
DIST_LUAS     ?= 5.1 5.2 5.3 5.4 luajit

.PHONY: release-rockspec dist dist-check version

version:
	@echo $(VERSION)

# a release rockspec is its dev rockspec with a version and a source tag
release-rockspec:
	@test -n "$(VERSION)" || { echo "no LLMCHAT_VERSION in src/core.c" >&2; exit 1; }
	@for rock in $(RELEASE_ROCKS); do \
	  dev=rockspec/$$rock-dev-1.rockspec; rel=rockspec/$$rock-$(VERSION)-1.rockspec; \
	  { echo "-- Release rockspec: generated from $$rock-dev-1.rockspec by \`make release-rockspec\`"; \
	    echo '-- (the version and the source tag differ; spec/version_spec.lua checks the rest agrees).'; \
	    sed -e 's/^version = "dev-1"$$/version = "$(VERSION)-1"/' \
	        -e 's|^\(  url = "git+https://github.com/llmchat/llmchat.git",\)$$|\1\n  tag = "v$(VERSION)",|' \
	        $$dev; } > $$rel.tmp && \
	  grep -q '^version = "$(VERSION)-1"$$' $$rel.tmp && grep -q '^  tag = "v$(VERSION)",$$' $$rel.tmp && \
	  mv $$rel.tmp $$rel && echo "wrote $$rel" || { rm -f $$rel.tmp; echo "cannot write $$rel" >&2; exit 1; }; \
	done

dist:
	@sh .ci/dist "$(VERSION)" "$(DIST_DIR)" $(RELEASE_ROCKS)

dist-check: dist
	@sh .ci/dist-check "$(DIST_DIR)" "$(VERSION)" $(DIST_LUAS)
