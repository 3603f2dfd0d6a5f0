# Quick start: `make demo` (generate with the bundled model) and `make test` (every test).
# Both install what is missing, idempotently.
SHELL := /bin/bash
VENV := .venv
TORCH_VERSION := 2.11.0
TORCH_STAMP := $(VENV)/.torch-$(TORCH_VERSION)
CARGO ?= cargo
SPN := target/release/spn
# The tool built without libtorch (sampling on the CPU engine only): what `make demo` runs and `make install`
# installs. Its own target folder, so that it and the full tool (training, evaluation, CUDA) never replace each
# other.
SPN_CPU := target/cpu/release/spn
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup build cpu-cli test demo data data-256 data-crops jxl-tools install install-files gimp-deps gloo-headers install-test-deps

setup: $(TORCH_STAMP) libtorch gloo-headers

# Gloo's headers, for the c10d shim of distributed training (the symbols come from libtorch itself).
gloo-headers:
	@if [ ! -f /usr/include/gloo/allreduce.h ]; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends libgloo-dev; \
	fi

$(TORCH_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	touch $@

# A stable path for LIBTORCH (see .cargo/config.toml) whatever the Python version.
libtorch: $(TORCH_STAMP)
	ln -sfn "$$($(VENV)/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')" libtorch

# libspn (spn-ffi) and the Rust API example are built on their own: in one cargo run with the crates that use
# libtorch, features unify and they would link libtorch too. They must not (issue 18): libspn loads the libtorch
# backend (libspn_torch.so) at run time instead.
NO_TORCH := spn-ffi spn-rust-api
build: setup
	$(CARGO) build --release --workspace $(addprefix --exclude ,$(NO_TORCH)) --features spn/dist
	$(CARGO) build --release $(addprefix -p ,$(NO_TORCH))
	@! ldd target/release/libspn.so target/release/spn-rust-api | grep -q torch || { echo "libspn.so or spn-rust-api links libtorch" >&2; exit 1; }

# Generation alone: the CLI without libtorch. Needs no PyTorch.
cpu-cli:
	$(CARGO) build --release -p spn-cli --no-default-features --target-dir target/cpu

# libjxl's cjxl, the JPEG XL baseline `spn eval` reports beside PNG and WebP (Debian package).
jxl-tools:
	@command -v cjxl >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends libjxl-tools; }

# GIMP 2.10 and its plug-in SDK, for the plug-in's headless tests (Debian packages; needs root or sudo).
gimp-deps:
	@if ! command -v gimp-console-2.10 >/dev/null || ! pkg-config --exists gimpui-2.0; then \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends gimp libgimp2.0-dev; \
	fi

# CMake and patchelf, for the install test (tests/tests/install.rs: a C++ host built with find_package).
install-test-deps: patchelf
	@command -v cmake >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends cmake; }

# The held-out emoji (`make data`) are scored against libwebp by one of the tests.
test: build cpu-cli gimp-deps jxl-tools install-test-deps data data-256
	$(CARGO) test --release --workspace $(addprefix --exclude ,$(NO_TORCH)) --features spn/dist --no-fail-fast

# Generation with the bundled model on the CPU engine: builds only what that needs, downloads no PyTorch.
demo: cpu-cli
	mkdir -p out
	$(SPN_CPU) generate --count 16 --seed 1 --grid out/demo.png --out out/demo
	@echo "wrote out/demo.png"

# The emoji data set (npm package emoji-datasource-google 16.0.0), composited on white and split; and the
# vector emoji of four Iconify sets (pinned npm packages) rendered at 64x64 beside the same PNGs, one
# sub-folder per style, each emoji held out in every style or none (models/README.md: sources and licences).
# The styles sets keep their alpha (`spn train --backgrounds` composites over colours); every reader
# composites it on white, to the same pixels as before.
EMOJI_VERSION := 16.0.0
ICONIFY_SETS := noto@1.2.9 fluent-emoji-flat@1.2.6 openmoji@1.2.29 emojione@1.2.3
ICONIFY_JSON := $(foreach s,$(ICONIFY_SETS),data/cache/iconify/$(firstword $(subst @, ,$(s)))/icons.json)
GOOGLE_PNG := data/cache/package/img/google/64
data: data/emoji/.done data/styles64/.done
data-256: data/styles256/.done
# 64x64 windows of the four vector styles rendered at 256 (one an emoji, where it has content), for the 64x64
# model that upscales 256x256 canvases window by window (recipes/styles64.sh, models/README.md stop 23).
data-crops: data/crops64/.done
data/emoji/.done: | build
	mkdir -p data/cache
	test -f data/cache/emoji-datasource-google-$(EMOJI_VERSION).tgz || \
	  (cd data/cache && npm pack --silent emoji-datasource-google@$(EMOJI_VERSION))
	rm -rf data/cache/package && tar xzf data/cache/emoji-datasource-google-$(EMOJI_VERSION).tgz -C data/cache package/img/google/64
	$(SPN) data --src $(GOOGLE_PNG) --out data/emoji
	touch $@
data/cache/iconify/.done:
	mkdir -p data/cache/iconify
	for s in $(ICONIFY_SETS); do name=$${s%@*}; ver=$${s#*@}; \
	  tgz=data/cache/iconify-json-$$name-$$ver.tgz; \
	  test -f $$tgz || (cd data/cache && npm pack --silent @iconify-json/$$s); \
	  rm -rf data/cache/iconify/$$name && mkdir -p data/cache/iconify/$$name && \
	  tar xzf $$tgz -C data/cache/iconify/$$name --strip-components=1 package/icons.json package/chars.json package/info.json; \
	done
	touch $@
data/styles64/.done: data/emoji/.done data/cache/iconify/.done | build
	rm -rf data/styles64
	$(SPN) data --src $(GOOGLE_PNG) --src-style google $(addprefix --iconify ,$(ICONIFY_JSON)) --size 64 --keep-alpha --out data/styles64
	touch $@
data/styles256/.done: data/emoji/.done data/cache/iconify/.done | build
	rm -rf data/styles256
	$(SPN) data $(addprefix --iconify ,$(ICONIFY_JSON)) --keys-from $(GOOGLE_PNG) --size 256 --keep-alpha --out data/styles256
	touch $@
data/crops64/.done: data/emoji/.done data/cache/iconify/.done | build
	rm -rf data/crops64
	$(SPN) data $(addprefix --iconify ,$(ICONIFY_JSON)) --keys-from $(GOOGLE_PNG) --size 256 --crop 64 --keep-alpha --out data/crops64
	touch $@

# Headers, libspn (libspn.so.VERSION with SONAME libspn.so.MAJOR and the usual links), pkg-config and CMake files
# (with a version file), the CLI built without libtorch and the default model (share/spn, found relative to the
# library and the executable): what a CPU host ships, with no libtorch at all. `make install-cuda` adds the
# libtorch backend and the full CLI. Installed binaries find each other and the libtorch copies through a
# RUNPATH relative to $ORIGIN, so the prefix can move and nothing points back into the checkout.
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
SOVERSION := $(firstword $(subst ., ,$(VERSION)))
.PHONY: install-cuda patchelf
install: build cpu-cli install-files
patchelf:
	@command -v patchelf >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends patchelf; }
install-files: patchelf
	install -d $(PREFIX)/include $(PREFIX)/lib/pkgconfig $(PREFIX)/lib/cmake/spn $(PREFIX)/bin $(PREFIX)/share/spn
	install -m 644 include/spn.h include/spn.hpp $(PREFIX)/include/
	install -m 755 target/release/libspn.so $(PREFIX)/lib/libspn.so.$(VERSION)
	ln -sfn libspn.so.$(VERSION) $(PREFIX)/lib/libspn.so.$(SOVERSION)
	ln -sfn libspn.so.$(SOVERSION) $(PREFIX)/lib/libspn.so
	# The SONAME is set here rather than at link time, so that hosts built in the tree keep needing the
	# tree's own libspn.so.
	patchelf --set-soname libspn.so.$(SOVERSION) $(PREFIX)/lib/libspn.so.$(VERSION)
	patchelf --set-rpath '$$ORIGIN' $(PREFIX)/lib/libspn.so.$(VERSION)
	install -m 755 $(SPN_CPU) $(PREFIX)/bin/
	sed 's|@VERSION@|$(VERSION)|' ffi/pkg/spn.pc.in > $(PREFIX)/lib/pkgconfig/spn.pc
	sed 's|@VERSION@|$(VERSION)|' ffi/pkg/spnConfig.cmake.in > $(PREFIX)/lib/cmake/spn/spnConfig.cmake
	sed 's|@VERSION@|$(VERSION)|' ffi/pkg/spnConfigVersion.cmake.in > $(PREFIX)/lib/cmake/spn/spnConfigVersion.cmake
	if [ -f models/default.spn ]; then install -m 644 models/default.spn $(PREFIX)/share/spn/; fi

# The CUDA add-on: the libtorch backend libspn loads at run time (lib/libspn_torch.so, beside libspn), the full
# CLI (training, evaluation, CUDA) in place of the CPU one, and the libtorch and CUDA libraries both load
# (PyTorch's wheel), copied into $(PREFIX)/lib/spn with a RUNPATH of $ORIGIN each.
install-cuda: install-files
	install -d $(PREFIX)/lib/spn
	install -m 755 target/release/libspn_torch.so $(PREFIX)/lib/
	patchelf --set-rpath '$$ORIGIN/spn' $(PREFIX)/lib/libspn_torch.so
	install -m 755 $(SPN) $(PREFIX)/bin/
	patchelf --set-rpath '$$ORIGIN/../lib/spn' $(PREFIX)/bin/spn
	for f in $$(ldd target/release/libspn_torch.so target/release/spn | awk '$$3 ~ /^\// {print $$3}' | sort -u); do \
	  real=$$(readlink -f "$$f"); case "$$real" in "$$(readlink -f libtorch)"/*|"$$(readlink -f libtorch/../..)"/*) \
	    install -m 755 "$$real" "$(PREFIX)/lib/spn/$$(basename "$$f")"; \
	    patchelf --set-rpath '$$ORIGIN' "$(PREFIX)/lib/spn/$$(basename "$$f")";; esac; \
	done
