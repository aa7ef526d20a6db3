# kiln: the two commands of the README.
#   make run   installs missing Debian packages, builds (Release) and tells a story
#   make test  same set-up, then runs every test through ctest
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: run test build deps configure clean sanitize

deps:
	@./scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release

configure: deps $(BUILD_DIR)/build.ninja

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

run: build
	./$(BUILD_DIR)/kiln run

test: build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -LE cuda

# The CPU code and its tests under AddressSanitizer and
# UndefinedBehaviorSanitizer (leak checks included), in a build directory
# of their own: a second, slow build (~20-25 minutes on two cores), so
# not part of `make test`.
SANITIZE = -fsanitize=address,undefined
sanitize: deps
	cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_CUDA=OFF \
	  -DKILN_BENCH=OFF \
	  -DCMAKE_CXX_FLAGS="$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
	  -DCMAKE_EXE_LINKER_FLAGS="$(SANITIZE)" -DCMAKE_SHARED_LINKER_FLAGS="$(SANITIZE)"
	cmake --build build-sanitize -j $(JOBS)
	cd build-sanitize && ctest --output-on-failure -j $(JOBS) -LE cuda

clean:
	rm -rf $(BUILD_DIR)
