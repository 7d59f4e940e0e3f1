// The man pages agree with the code: every configuration parameter, every
// signal of the master, every exit code and every flag is documented, and
// nothing else is documented as one; the pages render without warnings.
//
// Both pages list things as ".TP" entries whose tag line is ".B <name>"
// (see the comments at the top of man/*). Runs from the repository root.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/config.h"
#include "common/exit_codes.h"
#include "common/signals.h"
#include "master/options.h"
#include "tests/harness/harness.h"

namespace djinn {
namespace {

using testing::FileExists;
using testing::ReadFile;
using testing::RunCommand;

constexpr char kPage8[] = "man/djinn-consumer.8";
constexpr char kPage5[] = "man/djinn-consumer.conf.5";

// Roff text as a reader sees it: font and spacing escapes dropped, \- \e
// and the few special characters the pages use resolved, macro argument
// quotes removed.
std::string Plain(std::string line) {
  if (!line.empty() && line[0] == '.') {
    size_t sp = line.find(' ');
    line = sp == std::string::npos ? "" : line.substr(sp + 1);
    line.erase(std::remove(line.begin(), line.end(), '"'), line.end());
  }
  std::string out;
  for (size_t i = 0; i < line.size(); i++) {
    if (line[i] != '\\' || i + 1 >= line.size()) {
      out += line[i];
      continue;
    }
    char c = line[++i];
    if (c == 'f') {
      i++;  // \fB \fI \fR \fP
    } else if (c == '-') {
      out += '-';
    } else if (c == 'e') {
      out += '\\';
    } else if (c == '(' && i + 2 < line.size()) {
      std::string name = line.substr(i + 1, 2);
      i += 2;
      out += name == "dq" ? "\"" : name == "mu" ? "x" : " ";
    }  // \& \% and others: nothing
  }
  return out;
}

std::string Lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

struct Entry {
  std::string tag;   // first word of the tag line, plain
  std::string body;  // plain text of the paragraph, one space between words
};

// The .TP entries of ".SH <section>" (across its .SS subsections). A body
// runs to the next .TP, .PP, .SS or .SH.
std::vector<Entry> Entries(const std::string& page, const std::string& section) {
  std::vector<Entry> out;
  std::istringstream in(ReadFile(page));
  std::string line;
  bool inside = false, tag_next = false, in_body = false;
  while (std::getline(in, line)) {
    if (line.rfind(".SH", 0) == 0) {
      std::string name = Plain(line);
      inside = name == section;
      in_body = false;
      continue;
    }
    if (!inside || line.rfind(".\\\"", 0) == 0) continue;
    if (line == ".TP") {
      tag_next = true;
      in_body = false;
      continue;
    }
    if (tag_next) {
      std::istringstream words(Plain(line));
      Entry e;
      words >> e.tag;
      out.push_back(e);
      tag_next = false;
      in_body = true;
      continue;
    }
    if (line.rfind(".PP", 0) == 0 || line.rfind(".SS", 0) == 0) {
      in_body = false;
      continue;
    }
    if (in_body) {
      std::istringstream words(Plain(line));
      std::string w;
      while (words >> w) out.back().body += (out.back().body.empty() ? "" : " ") + w;
    }
  }
  return out;
}

std::set<std::string> Tags(const std::vector<Entry>& entries) {
  std::set<std::string> tags;
  for (const auto& e : entries) tags.insert(e.tag);
  return tags;
}

// "missing: a, b; not in the code: c" or "" when the sets are equal.
std::string Diff(const std::set<std::string>& want, const std::set<std::string>& documented) {
  std::string missing, extra;
  for (const auto& w : want)
    if (!documented.count(w)) missing += (missing.empty() ? "" : ", ") + w;
  for (const auto& d : documented)
    if (!want.count(d)) extra += (extra.empty() ? "" : ", ") + d;
  std::string out;
  if (!missing.empty()) out += "undocumented: " + missing;
  if (!extra.empty())
    out += std::string(out.empty() ? "" : "; ") + "documented but not in the code: " + extra;
  return out;
}

class ManPageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* page : {kPage8, kPage5})
      ASSERT_TRUE(FileExists(page)) << page << " not found: run the tests from the repository root";
  }
};

TEST_F(ManPageTest, ConfPageDocumentsEveryConfigParameterAndNoOther) {
  const auto& names = ConfigParameterNames();
  std::set<std::string> want(names.begin(), names.end());
  auto entries = Entries(kPage5, "PARAMETERS");
  EXPECT_EQ(Diff(want, Tags(entries)), "") << "in " << kPage5 << " PARAMETERS";
  EXPECT_EQ(entries.size(), Tags(entries).size()) << "a parameter is documented twice";
}

TEST_F(ManPageTest, ConfPageGivesEveryParameterAType) {
  for (const auto& e : Entries(kPage5, "PARAMETERS")) {
    std::string first = e.body.substr(0, e.body.find_first_of(",;:"));
    EXPECT_TRUE(first == "String" || first == "Integer" || first == "Boolean" || first == "Group" ||
                first == "Duration" || first == "Size" ||
                first == "Array of strings")
        << e.tag << ": the description should start with its type, not \"" << first << "\"";
  }
}

TEST_F(ManPageTest, SignalsSectionMatchesTheSignalTable) {
  auto entries = Entries(kPage8, "SIGNALS");
  std::set<std::string> want;
  for (const auto& row : kMasterSignals) want.insert(row.name);
  EXPECT_EQ(Diff(want, Tags(entries)), "") << "in " << kPage8 << " SIGNALS";
  for (const auto& row : kMasterSignals) {
    for (const auto& e : entries) {
      if (e.tag != row.name) continue;
      EXPECT_NE(Lower(e.body).find(row.effect), std::string::npos)
          << row.name << ": the man page should say \"" << row.effect
          << "\" (common/signals.h); it says: " << e.body;
    }
  }
}

TEST_F(ManPageTest, ExitStatusSectionMatchesTheExitCodes) {
  std::set<std::string> want;
  for (int code :
       {kExitOk, kExitFailure, kExitUsage, kExitWorkerSandbox, kExitWorkerInit, kExitWorkerOrphan})
    want.insert(std::to_string(code));
  // Codes added to the enum get a meaning for the master's log: catch them too.
  for (int code = 0; code < 256; code++)
    if (std::string(WorkerExitCodeMeaning(code)) != "unexpected exit code")
      want.insert(std::to_string(code));
  EXPECT_EQ(Diff(want, Tags(Entries(kPage8, "EXIT STATUS"))), "")
      << "in " << kPage8 << " EXIT STATUS";
}

TEST_F(ManPageTest, OptionsSectionMatchesTheUsage) {
  std::set<std::string> want;
  std::istringstream usage(Usage());
  std::string line;
  while (std::getline(usage, line)) {
    std::istringstream words(line);
    std::string flag;
    if (words >> flag && flag[0] == '-') want.insert(flag);
  }
  ASSERT_FALSE(want.empty()) << "no flags found in Usage()";
  EXPECT_EQ(Diff(want, Tags(Entries(kPage8, "OPTIONS"))), "") << "in " << kPage8 << " OPTIONS";
}

TEST_F(ManPageTest, PagesNameTheBuildVersion) {
  for (const char* page : {kPage8, kPage5}) {
    std::string th;
    std::istringstream in(ReadFile(page));
    while (std::getline(in, th) && th.rfind(".TH ", 0) != 0) {
    }
    EXPECT_NE(th.find(std::string("djinn-consumer ") + DJINN_VERSION), std::string::npos)
        << page << ": .TH should name version " << DJINN_VERSION << ": " << th;
  }
}

TEST_F(ManPageTest, PagesRenderWithoutGroffWarnings) {
  if (RunCommand({"sh", "-c", "command -v groff"}) != 0) GTEST_SKIP() << "groff is not installed";
  for (const char* page : {kPage8, kPage5}) {
    std::string out;
    EXPECT_EQ(RunCommand({"groff", "-man", "-ww", "-z", page}, &out), 0) << page << ": " << out;
    EXPECT_EQ(out, "") << "groff -man -ww -z " << page;
  }
}

TEST_F(ManPageTest, PagesRenderWithoutManWarnings) {
  if (RunCommand({"sh", "-c", "command -v man"}) != 0) GTEST_SKIP() << "man is not installed";
  for (const char* page : {kPage8, kPage5}) {
    std::string out;
    // Only standard error is collected: the rendered page goes nowhere.
    EXPECT_EQ(
        RunCommand({"sh", "-c", std::string("man --warnings -l ") + page + " >/dev/null"}, &out), 0)
        << page << ": " << out;
    EXPECT_EQ(out, "") << "man --warnings -l " << page;
  }
}

}  // namespace
}  // namespace djinn
