"""The test suite, a package: what its modules share is ``tests.support``; each test module imports only that."""
