// The kitten command line, run as a user runs it: output and exit status.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

namespace {

struct CliRun {
  int status;
  std::string out;  // stdout and stderr together
};

CliRun kitten(const std::string& args) {
  std::string cmd = std::string(KITTEN_BIN) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliRun r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(Cli, HelpListsTheCommands) {
  CliRun r = kitten("--help");
  EXPECT_EQ(r.status, 0);
  for (const char* c : {"uops", "graph", "simplify"})
    EXPECT_NE(r.out.find(c), std::string::npos) << c;
  EXPECT_EQ(kitten("").status, 2);
}

TEST(Cli, UnknownCommandsAndKernelsExitTwo) {
  CliRun r = kitten("frobnicate");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("unknown command 'frobnicate'"), std::string::npos) << r.out;
  r = kitten("graph nope");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("known: add, sum"), std::string::npos) << r.out;
}

TEST(Cli, GraphPrintsAVerifiedKernel) {
  CliRun r = kitten("graph sum");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("kernel sum: 29 nodes, verified, key "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("SINK(%27) [\"sum\"] : void"), std::string::npos) << r.out;
}

TEST(Cli, SimplifyPrintsTheExpressionAndItsBounds) {
  CliRun r = kitten("simplify '(x*4+3)/4 + y' --var x=0..15 --var y=1..8");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "x + y\nbounds: [1, 23]\n");
}

TEST(Cli, SimplifyBadInputIsAClearError) {
  CliRun r = kitten("simplify 'x + * 2' --var x=0..3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("column 5"), std::string::npos) << r.out;
  r = kitten("simplify 'x + y' --var x=0..3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("'y' has no bounds"), std::string::npos) << r.out;
  r = kitten("simplify 'x' --var x=3..0");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("empty"), std::string::npos) << r.out;
  r = kitten("simplify 'x / y' --var x=0..3 --var y=0..3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("divisor can be 0"), std::string::npos) << r.out;
  r = kitten("simplify 'x' --var x=0..3 --var x=1..2");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("given twice"), std::string::npos) << r.out;
}

TEST(Cli, DevicesListsTheCpuAndHowItCompiles) {
  CliRun r = kitten("devices");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("cpu: arch "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("compiler: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("emu: arch sm_90a"), std::string::npos) << r.out;
}

TEST(Cli, RenderForTheEmulatorPrintsTheLinearProgram) {
  CliRun r = kitten("render tiled_matmul --device emu");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("BARRIER("), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[threadIdx.x]"), std::string::npos) << r.out;
}

TEST(Cli, RenderPrintsTheLinearProgramAndTheSource) {
  for (const char* k : {"add", "sum", "matmul", "multi"}) {
    CliRun r = kitten(std::string("render ") + k + " --device cpu");
    EXPECT_EQ(r.status, 0) << r.out;
    EXPECT_NE(r.out.find("// linear program"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("(void* const* args, long long lo, long long hi)"), std::string::npos)
        << r.out;
  }
  CliRun r = kitten("render matmul --device tpu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("no device named 'tpu'"), std::string::npos) << r.out;
}

TEST(Cli, SimplifyFuzzRuns) {
  CliRun r = kitten("simplify --fuzz 200 --seed 5");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("expressions checked"), std::string::npos) << r.out;
}

}  // namespace
