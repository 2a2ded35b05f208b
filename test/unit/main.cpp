// The Catch2 main function of kiln-unit-tests (Catch2 v2 has no portable
// Catch2WithMain target).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
