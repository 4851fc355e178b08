"""Developer tooling: make run, make package, make bench, and the strict store the tests run on."""
