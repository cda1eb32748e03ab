# nixtasks' own Makefile: the user targets (examples/Makefile) plus the project's.
include examples/Makefile

.PHONY: setup check demo bench soak lab-up lab-down lab-status

help::
	@echo "make demo              bring up the lab and deploy the example fleet to it"
	@echo "make bench             nixtasks against the sequential loop on the lab and wan links, 1 to 32 hosts; through the binary cache against a direct push; the engine at 1,000 (about 30 min)"
	@echo "make check             lint, type-check and run every test (lab tests need root)"
	@echo "make soak ROUNDS=5 HOSTS=8 SEED=N  rounds of random faults on the lab, the invariants checked after each"
	@echo "make lab-up            boot the lab hosts (web1 web2 db1)"
	@echo "make lab-down          power the lab off and remove everything it made"
	@echo "make lab-status        each lab host's address, state and current system"
	@echo "make setup             install what this machine lacks (apt packages, the package)"

setup:
	scripts/setup

check: setup
	scripts/check

demo: setup
	scripts/demo

bench: setup
	python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check -e ".[bench]"
	benchmarks/bench
	benchmarks/engine-scale

# Not after setup: it runs the nixtasks on PYTHONPATH (or installed) as it is. HOSTS is a count here.
soak:
	lab/soak --rounds $(or $(ROUNDS),5) --hosts $(or $(value HOSTS),8) $(if $(SEED),--seed $(SEED))

lab-up: setup
	lab/labctl up

lab-down:
	lab/labctl down

lab-status:
	lab/labctl status
