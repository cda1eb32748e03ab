# nixtasks: a thin Makefile for a flake repository. Every target delegates to invoke
# (tasks.py: `from nixtasks.tasks import ns`). `make help` lists them.
INVOKE ?= invoke
# Passed through the environment, never through a shell command line.
# YES=1 and REASON=... win over the same NIXTASKS_* variables in the environment.
# $(value ...) takes them verbatim, and unexport keeps make from expanding them itself
# when it would export them: make must never run a $(...) inside a reason.
unexport YES REASON HOSTS TAG TO PLAN ASK_SUDO_PASSWORD FOLLOW
export NIXTASKS_YES := $(or $(value YES),$(NIXTASKS_YES))
export NIXTASKS_REASON := $(or $(value REASON),$(NIXTASKS_REASON))
# ASK_SUDO_PASSWORD=1: ask once for the hosts' sudo password (NIXTASKS_SUDO_PASSWORD_FILE without a terminal).
export NIXTASKS_ASK_SUDO_PASSWORD := $(or $(value ASK_SUDO_PASSWORD),$(NIXTASKS_ASK_SUDO_PASSWORD))
q = '$(subst ','\'',$(1))'
ACTIONS := switch boot test build dry-build dry-activate rollback

RECIPES := canary rolling blue-green update-deploy stage apply emergency
# HOSTS=web1,web2 and TAG=web select hosts, taken verbatim and quoted.
select = $(if $(value HOSTS),--host $(call q,$(value HOSTS))) $(if $(value TAG),--tag $(call q,$(value TAG)))
plan = $(call q,$(or $(value PLAN),nixtasks-plan.json))
# An empty selection never means "this machine": HOSTS= or TAG= given but blank (a script's unset
# variable), host//ACTION and tag//ACTION stop with one error line, before invoke runs.
comma := ,
refuse = @echo $(call q,error: $(strip $(1))) >&2; exit 2
given_blank = $(if $(filter command% environment%,$(origin $(1))),$(if $(strip $(value $(1))),,$(1)))
blank = $(firstword $(call given_blank,HOSTS) $(call given_blank,TAG))
example = $(if $(filter HOSTS,$(1)),host names like HOSTS=web1$(comma)web2,a tag like TAG=web)
blank_error = $(blank)= is empty; give $(call example,$(blank)), or leave $(blank) out$(if $(filter $(ACTIONS),$@),\
 to act on this machine)
# host/NAME/ACTION and tag/TAG/ACTION: what is missing from the path ($(1): host or tag, $(2): the rest).
name_of = $(patsubst %/,%,$(dir $(1)))
eg = $(if $(filter host,$(1)),web1,web)
action_of = $(or $(notdir $(1)),switch)
no_name = make $(1)/$(2) names no $(1); name one like make $(1)/$(eg)/$(call action_of,$(2))$(if $(filter host,$(1)),$\
$(comma) or run make $(call action_of,$(2)) to act on this machine)
path_error = $(if $(findstring /,$(2)),$(if $(call name_of,$(2)),$(if $(notdir $(2)),,\
make $(1)/$(2) names no action; e.g. make $(1)/$(call name_of,$(2))/switch),$(no_name)),\
make $(1)/$(2): give a $(1) and an action$(comma) like make $(1)/$(eg)/switch)
kind = $(firstword $(subst /, ,$@))
by_path = $(if $(call path_error,$(kind),$*),$(call refuse,$(call path_error,$(kind),$*)),$(call checked,$\
$(INVOKE) $(call q,$(notdir $*)) --$(kind) $(call q,$(call name_of,$*)) $(select)))
# A target's command, or one error line when its selection is blank.
checked = $(if $(blank),$(call refuse,$(blank_error)),$(1))

.PHONY: help $(ACTIONS) $(RECIPES)

help::
	@echo "make switch            build this machine's system, set the boot profile, activate now"
	@echo "make boot              build and set the boot profile; activate at the next boot"
	@echo "make test              build and activate now; leave the boot entry alone"
	@echo "make build             build the system closure; activate nothing"
	@echo "make dry-build         show what would be built or fetched; build nothing"
	@echo "make dry-activate      build and show what activation would change"
	@echo "make rollback          go back to the previous generation (invoke rollback --generation N for another)"
	@echo "make host/NAME/ACTION  any ACTION above for host NAME, e.g. make host/web1/switch"
	@echo "make tag/TAG/ACTION    for every host tagged TAG, e.g. make tag/web/switch"
	@echo "make fleet/ACTION      for every host in the inventory, e.g. make fleet/switch"
	@echo "make canary HOSTS=...  canary hosts first, a soak and a second approval, then the rest"
	@echo "make rolling TAG=web   one host at a time, checks after each, halt on the first failure"
	@echo "make blue-green TO=blue  boot and reboot the idle group, check it, then switch traffic to it"
	@echo "make update-deploy TAG=web  nix flake update, build, one approval, commit flake.lock, deploy"
	@echo "make stage HOSTS=...   build, copy, diff and write a plan file (PLAN=, default nixtasks-plan.json)"
	@echo "make apply             deploy exactly the staged plan (PLAN=...)"
	@echo "make emergency HOSTS=web1 REASON='...'  test-activate, check, ask, switch, follow the journal (FOLLOW=60 s)"
	@echo "    YES=1 approves, REASON='...' records why, HOSTS=a,b and TAG=t select hosts,"
	@echo "    ASK_SUDO_PASSWORD=1 asks for the hosts' sudo password"

$(ACTIONS) canary rolling update-deploy:
	$(call checked,$(INVOKE) $@ $(select))

# FOLLOW=SECONDS: how long to follow the hosts' journals afterwards (0: not at all).
emergency:
	$(call checked,$(INVOKE) emergency $(select) $(if $(value FOLLOW),--follow $(call q,$(value FOLLOW))))

# Two rules, not one `host/% tag/%` rule: make takes a pattern rule's targets as made together.
host/%:
	$(by_path)

tag/%:
	$(by_path)

fleet/%:
	$(call checked,$(INVOKE) $(call q,$*) --all $(select))

blue-green:
	$(INVOKE) blue-green $(if $(value TO),--to $(call q,$(value TO)))

stage:
	$(call checked,$(INVOKE) stage $(select) --plan $(plan))

apply:
	$(INVOKE) apply $(plan)
