// The kitten command line, run as a user runs it: output and exit status.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

namespace {

struct CliRun {
  int status;
  std::string out;  // stdout and stderr together
};

// `cmd` run by the shell; $KITTEN is the kitten binary.
CliRun shell(const std::string& cmd) {
  FILE* p = popen(("KITTEN='" + std::string(KITTEN_BIN) + "'; " + cmd).c_str(), "r");
  CliRun r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

CliRun kitten(const std::string& args) { return shell("\"$KITTEN\" " + args + " 2>&1"); }

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

TEST(Cli, TrainDemoPrintsProgressAndRefusesBadOptions) {
  CliRun r = kitten("run train-demo --device cpu --steps 50");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("step   50  cross-entropy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("50 steps in"), std::string::npos) << r.out;
  EXPECT_EQ(kitten("run train-demo --steps 0").status, 2);
  EXPECT_EQ(kitten("run train-demo --fast").status, 2);
}

TEST(Cli, DecodeDemoCapturesOnceAndChecksEveryStep) {
  CliRun r = kitten("run decode-demo --device cpu --steps 70");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("step   64  attends over   64 rows  replayed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("70 steps in"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("68 replays of a"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(below 1e-4)"), std::string::npos) << r.out;
  EXPECT_EQ(kitten("run decode-demo --steps x").status, 2);
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
  EXPECT_EQ(r.out, "x + y\nbounds: [1, 23]\ndivisible by: 1\n");
  // The third line: a swizzled shared-memory address is a multiple of 16.
  r = kitten("simplify 'row*128 + ((col ^ (row%8))*16)' --var row=0..63 --var col=0..7");
  EXPECT_EQ(r.out, "(col ^ row%8)*16 + row*128\nbounds: [0, 8176]\ndivisible by: 16\n");
  // int32, and an expression read from stdin (a 100,000-term chain is too long for argv).
  r = kitten("simplify 'x*65536*4' --var x=0..3 --dtype int32");
  EXPECT_EQ(r.out, "x*262144\nbounds: [0, 786432]\ndivisible by: 262144\n");
  r = shell("printf 'x + x + x' | \"$KITTEN\" simplify - --var x=0..3 2>&1");
  EXPECT_EQ(r.out, "x*3\nbounds: [0, 9]\ndivisible by: 3\n");
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
  r = kitten("simplify 'x << y' --var x=0..3 --var y=0..64");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("column 6: the shift count can fall outside [0, 63]"), std::string::npos)
      << r.out;
  r = kitten("simplify 'x + 010' --var x=0..3");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("column 5: a literal with a leading 0 is octal in C"), std::string::npos)
      << r.out;
  r = kitten("simplify 'x + 2147483648' --var x=0..3 --dtype int32");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("the literal does not fit in int32"), std::string::npos) << r.out;
  r = kitten("simplify 'x' --var x=0..3 --dtype int16");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--dtype takes int32 or int64"), std::string::npos) << r.out;
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

TEST(Cli, LowerListsItsPassesAndPrintsAfterOne) {
  CliRun r = kitten("lower --passes");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out.rfind("schedule: ", 0), 0u) << r.out;
  EXPECT_LT(r.out.find("\nexpand: "), r.out.find("\nmap_grid: ")) << r.out;
  r = kitten("lower tiled_matmul --device emu --print-after simplify_indices");
  EXPECT_EQ(r.status, 0) << r.out;
  size_t after = r.out.find("# after simplify_indices\n"),
         lowered = r.out.find("# lowered for emu");
  EXPECT_NE(after, std::string::npos) << r.out;
  EXPECT_NE(lowered, std::string::npos) << r.out;
  EXPECT_LT(after, lowered) << r.out;
  EXPECT_NE(r.out.find("BARRIER("), std::string::npos) << r.out;
  r = kitten("lower matmul --device cpu --schedule 'CUT:0:32 UPCAST:1:4'");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("# lowered for cpu (x86_64): matmul_0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("# lowered for cpu (x86_64): matmul_1"), std::string::npos) << r.out;
  r = kitten("lower matmul --schedule 'UPCAST:2:4'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("needs a global axis; axis is reduce"), std::string::npos) << r.out;
  r = kitten("lower matmul --schedule 'UPCAST:1'");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("column 1"), std::string::npos) << r.out;
  r = kitten("lower add --print-after no_such_pass");
  EXPECT_EQ(r.status, 2) << r.out;
  EXPECT_NE(r.out.find("no pass is named 'no_such_pass'"), std::string::npos) << r.out;
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

TEST(Cli, AnUnavailableDeviceIsAFailureNotBadUsage) {
  // No GPU is visible to the CUDA driver, on any machine.
  CliRun r = shell("CUDA_VISIBLE_DEVICES= \"$KITTEN\" render matmul --device cuda 2>&1");
  EXPECT_EQ(r.status, 1) << r.out;
  EXPECT_NE(r.out.find("kitten render: cuda: unavailable here: "), std::string::npos) << r.out;
}

TEST(Cli, AnOutputThatCannotBeWrittenFailsTheCommand) {
  if (access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no /dev/full here";
  for (const char* args : {"uops --doc", "uops", "graph sum", "graph --list", "--help", "devices",
                           "render add", "simplify 'x + 0' --var x=0..3"}) {
    CliRun r = shell(std::string("\"$KITTEN\" ") + args + " 2>&1 >/dev/full");
    EXPECT_EQ(r.status, 1) << args << ": " << r.out;
    EXPECT_NE(r.out.find("kitten: cannot write the output"), std::string::npos)
        << args << ": " << r.out;
  }
}

TEST(Cli, SimplifyRefusesNegativeAndMalformedCounts) {
  CliRun r = kitten("simplify --fuzz -5");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--fuzz takes a number of expressions (0 or more), got '-5'"),
            std::string::npos)
      << r.out;
  r = kitten("simplify --fuzz 10 --seed -1");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("--seed takes a number from 0 to 18446744073709551615, got '-1'"),
            std::string::npos)
      << r.out;
  for (const char* bad : {"--fuzz 10x", "--fuzz ''", "--fuzz 10 --seed 1e3",
                          "--fuzz 10 --seed 18446744073709551616"}) {
    r = kitten(std::string("simplify ") + bad);
    EXPECT_EQ(r.status, 2) << bad << ": " << r.out;
  }
}

TEST(Cli, ErrorMessagesEscapeControlBytes) {
  // printf makes the bytes: ESC, a newline, a carriage return.
  CliRun r = kitten("graph \"$(printf 'a\\033[2Jb\\nc\\rd')\"");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("'a\\x1b[2Jb\\nc\\rd'"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find_first_of("\x1b\r"), std::string::npos) << r.out;
  r = kitten("render add --device \"$(printf 'x\\033y\\tz')\"");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("'x\\x1by\\tz'"), std::string::npos) << r.out;
  r = kitten("uops \"$(printf '\\001\\177')\"");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.out.find("'\\x01\\x7f'"), std::string::npos) << r.out;
}

TEST(Cli, KittenCcIsNeverRunThroughAShell) {
  std::string marker = testing::TempDir() + "kitten-cli-cc-" + std::to_string(getpid());
  std::filesystem::remove(marker);
  CliRun r = shell("KITTEN_CPU_COMPILER=subprocess KITTEN_CC='cc; touch " + marker +
                   "' \"$KITTEN\" devices 2>&1");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("cannot run the C compiler 'cc; touch " + marker + "'"), std::string::npos)
      << r.out;
  EXPECT_FALSE(std::filesystem::exists(marker)) << "the text after ';' ran as a command";
  std::filesystem::remove(marker);
}

TEST(Cli, SimplifyFuzzRuns) {
  CliRun r = kitten("simplify --fuzz 200 --seed 5");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("expressions checked"), std::string::npos) << r.out;
}

}  // namespace
