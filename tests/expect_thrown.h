// A check shared by the test suites of every layer: a call refused with an exception of
// one type whose message says why.
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace kitten {

// Expects f() to throw E (another exception type is a failure too, and propagates) whose
// message contains `says`.
template <class E, class F>
void expect_thrown(F&& f, const std::string& says) {
  try {
    f();
    ADD_FAILURE() << "not refused: " << says;
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(says), std::string::npos) << e.what();
  }
}

}  // namespace kitten
