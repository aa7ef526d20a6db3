// A small command-line parser that also writes the --help text, so every
// flag a command accepts is documented where it is declared.
//
//   ArgParser p("kiln run", "[MODEL] -p TEXT", "Generate a continuation.");
//   std::string prompt; int n = 128;
//   p.option("-p,--prompt", "TEXT", "prompt text", &prompt);
//   p.option("-n", "N", "tokens to generate (default 128)", &n);
//   if (!p.parse(args)) return p.exit_code();
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace kiln::app {

class ArgParser {
 public:
  ArgParser(std::string program, std::string usage, std::string description);

  void flag(const std::string& names, const std::string& help, bool* target);
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              std::string* target);
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              int* target);
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              int64_t* target);
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              float* target);
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              std::optional<float>* target);
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              std::optional<int>* target);
  // An option that may repeat: each occurrence is appended.
  void option(const std::string& names, const std::string& metavar, const std::string& help,
              std::vector<std::string>* target);
  // Positional arguments, in order; optional ones may be left out.
  void positional(const std::string& metavar, const std::string& help, std::string* target,
                  bool required);
  // Free text shown after the options in --help (examples, notes).
  void epilog(const std::string& text) { epilog_ = text; }

  // Returns false when the command should stop: after --help (exit code 0)
  // or on a bad flag (message printed on stderr, exit code 2).
  bool parse(const std::vector<std::string>& args);
  int exit_code() const { return exit_code_; }
  std::string help() const;

 private:
  struct Spec {
    std::vector<std::string> names;
    std::string metavar;
    std::string help;
    std::function<bool(const std::string&)> set;  // returns false if value is invalid
    bool takes_value = true;
    bool seen = false;
  };
  struct Positional {
    std::string metavar, help;
    std::string* target;
    bool required;
  };
  Spec* find(const std::string& name);
  void add(const std::string& names, const std::string& metavar, const std::string& help,
           std::function<bool(const std::string&)> set, bool takes_value);

  std::string program_, usage_, description_, epilog_;
  std::vector<Spec> specs_;
  std::vector<Positional> positionals_;
  int exit_code_ = 0;
};

}  // namespace kiln::app
