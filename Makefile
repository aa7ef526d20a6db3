# kiln: the two commands of the README.
#   make run   installs missing Debian packages, builds (Release) and tells a story
#   make test  same set-up, then runs every test through ctest
BUILD_DIR ?= build
JOBS ?= $(shell nproc)

.PHONY: run test build deps configure clean

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

clean:
	rm -rf $(BUILD_DIR)
