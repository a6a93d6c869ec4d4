# Two entry points for a fresh machine; each sets itself up first.
#   make demo   the live demo: enroll, replay owner then impostor, neuroauthd over MQTT
#   make test   lint and run the test suite (what CI runs)
#   make test-fast   the same without the slow tests, for the edit-test loop

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast setup mosquitto

setup: $(STAMP)

# torch and torchvision go in first, pinned to the pair that imports together here;
# the package's own range (torch <= 2.14.1) then leaves them in place.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP) mosquitto
	$(BIN)/neuroauth demo

test: $(STAMP) mosquitto
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The edit-test loop: everything but the tests marked slow (training, real-time streams, live broker).
test-fast: $(STAMP) mosquitto
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow"

# The demo and the MQTT tests run a real broker. Debian puts it in /usr/sbin, which is not on
# every user's PATH; install it (as root, or through sudo) only when it is missing.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; then :; \
	elif [ "$$(id -u)" -eq 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto; \
	else \
		sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto; \
	fi
