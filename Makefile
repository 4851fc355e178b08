# Two commands a newcomer needs: `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
DB_PORT ?= 8001

.PHONY: run test lint js bench requirements package deploy clean

# The virtualenv is rebuilt whenever pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# Data in .data/ (DATA_DIR=... moves it; FRESH=1 starts empty). STRICT=1: the store answers as
# DynamoDB would (limits, conflicts, index lag, throttling). HOST=0.0.0.0 serves other machines,
# taken from the command line only (zsh exports HOST as the machine's name).
run: $(BIN)/.installed
	$(BIN)/python scripts/run_local.py --port $(PORT) --db-port $(DB_PORT) \
		$(if $(DATA_DIR),--data-dir "$(DATA_DIR)") $(if $(filter 1,$(FRESH)),--fresh) \
		$(if $(filter command line,$(origin HOST)),--host "$(HOST)") $(if $(filter 1,$(STRICT)),--strict)

test: lint js
	$(BIN)/pytest

# The JavaScript SDKs the end-to-end tests run: @sentry/node as an app requires it, @sentry/browser
# bundled (it ships only ESM and CJS) into the one script a page loads, exposing the global Sentry.
# Reinstalled whenever the lockfile changes. Without Node those tests skip; `make test` goes on.
JS := tests/js
NPM := $(shell command -v npm 2>/dev/null)
NODE := $(shell command -v node 2>/dev/null)

ifneq ($(and $(NPM),$(NODE)),)
js: build/js/sentry-browser.js
else
js:
	@echo "node/npm not found: the JavaScript SDK tests will be skipped; install Node 20+ with npm to run them"
endif

$(JS)/node_modules/.installed: $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Not minified, so the SDK's frames keep their names.
build/js/sentry-browser.js: $(JS)/sentry-browser.mjs $(JS)/node_modules/.installed
	$(JS)/node_modules/.bin/esbuild $(JS)/sentry-browser.mjs --bundle --format=iife --global-name=Sentry \
		--log-level=warning --outfile=$@

# What each request costs next to the floor no implementation can beat; writes bench.json.
bench: $(BIN)/.installed
	$(BIN)/python scripts/bench.py

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# requirements.txt is what Chalice bundles; it is generated from pyproject.toml.
requirements: $(BIN)/.installed
	$(BIN)/python scripts/requirements.py

STAGE ?= dev
PACKAGE_DIR ?= build/$(STAGE)
AWS_REGION ?= $(or $(AWS_DEFAULT_REGION),us-east-1)
STACK ?= errortracking-$(STAGE)
PUBLIC_URL ?=
ALARM_EMAIL ?=

# CloudFormation template + deployment.zip, with the table, KMS key, gateway responses and alarms,
# for python3.13 on arm64 whatever Python runs it; .pyc compiled by a local Python 3.13 if there is one.
package: $(BIN)/.installed requirements
	rm -rf $(PACKAGE_DIR)
	AWS_DEFAULT_REGION=$(AWS_REGION) $(BIN)/python scripts/package.py --stage $(STAGE) \
		--merge-template .chalice/merge-template.json $(PACKAGE_DIR)
	@echo "Template and bundle in $(PACKAGE_DIR)/"

# Needs the AWS CLI, credentials, and an S3 bucket for the bundle: make deploy BUCKET=my-artifacts
deploy: package
	@test -n "$(BUCKET)" || (echo "make deploy needs BUCKET=<an S3 bucket for the Lambda bundle>" >&2; exit 2)
	aws cloudformation package --region $(AWS_REGION) --template-file $(PACKAGE_DIR)/sam.json \
		--s3-bucket $(BUCKET) --output-template-file $(PACKAGE_DIR)/packaged.yaml
	aws cloudformation deploy --region $(AWS_REGION) --template-file $(PACKAGE_DIR)/packaged.yaml \
		--stack-name $(STACK) --capabilities CAPABILITY_IAM \
		--parameter-overrides PublicUrl=$(PUBLIC_URL) AlarmEmail=$(ALARM_EMAIL)
	@aws cloudformation describe-stacks --region $(AWS_REGION) --stack-name $(STACK) \
		--query "Stacks[0].Outputs[?OutputKey=='EndpointURL' || OutputKey=='IngestUrl' || OutputKey=='TableName' || OutputKey=='SentryTokenKeyArn'].[OutputKey,OutputValue]" \
		--output text
	@echo "First admin token, against the deployed table (your AWS credentials, no endpoint override):"
	@echo "  ERRORTRACKING_TABLE=<TableName above> AWS_DEFAULT_REGION=$(AWS_REGION) $(BIN)/errortracking user create root --admin"
	@echo "  ERRORTRACKING_TABLE=<TableName above> AWS_DEFAULT_REGION=$(AWS_REGION) $(BIN)/errortracking token create root"

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache *.egg-info $(JS)/node_modules
