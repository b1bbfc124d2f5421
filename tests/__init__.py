"""The test suite of minidl (a package, so that the tests can share :mod:`tests.helpers`)."""
