#include "args.h"

#include <cerrno>
#include <cstdio>
#include <cctype>
#include <cstdlib>
#include <sstream>

namespace kiln::app {
namespace {

std::vector<std::string> split_names(const std::string& names) {
  std::vector<std::string> out;
  std::stringstream ss(names);
  std::string part;
  while (std::getline(ss, part, ',')) out.push_back(part);
  return out;
}

bool parse_int64(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno || *end) return false;
  *out = v;
  return true;
}

bool parse_float(const std::string& s, float* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  float v = std::strtof(s.c_str(), &end);
  if (errno || *end) return false;
  *out = v;
  return true;
}

}  // namespace

ArgParser::ArgParser(std::string program, std::string usage, std::string description)
    : program_(std::move(program)), usage_(std::move(usage)), description_(std::move(description)) {}

void ArgParser::add(const std::string& names, const std::string& metavar, const std::string& help,
                    std::function<bool(const std::string&)> set, bool takes_value) {
  specs_.push_back({split_names(names), metavar, help, std::move(set), takes_value, false});
}

void ArgParser::flag(const std::string& names, const std::string& help, bool* target) {
  add(names, "", help, [target](const std::string&) { return *target = true, true; }, false);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, std::string* target) {
  add(names, metavar, help, [target](const std::string& v) { return *target = v, true; }, true);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, int* target) {
  add(names, metavar, help,
      [target](const std::string& v) {
        int64_t x;
        if (!parse_int64(v, &x) || x < INT32_MIN || x > INT32_MAX) return false;
        *target = int(x);
        return true;
      },
      true);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, int64_t* target) {
  add(names, metavar, help, [target](const std::string& v) { return parse_int64(v, target); },
      true);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, float* target) {
  add(names, metavar, help, [target](const std::string& v) { return parse_float(v, target); },
      true);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, std::optional<float>* target) {
  add(names, metavar, help,
      [target](const std::string& v) {
        float x;
        if (!parse_float(v, &x)) return false;
        *target = x;
        return true;
      },
      true);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, std::optional<int>* target) {
  add(names, metavar, help,
      [target](const std::string& v) {
        int64_t x;
        if (!parse_int64(v, &x) || x < INT32_MIN || x > INT32_MAX) return false;
        *target = int(x);
        return true;
      },
      true);
}

void ArgParser::option(const std::string& names, const std::string& metavar,
                       const std::string& help, std::vector<std::string>* target) {
  add(names, metavar, help, [target](const std::string& v) { return target->push_back(v), true; },
      true);
}

void ArgParser::positional(const std::string& metavar, const std::string& help,
                           std::string* target, bool required) {
  positionals_.push_back({metavar, help, target, required});
}

ArgParser::Spec* ArgParser::find(const std::string& name) {
  for (auto& s : specs_)
    for (auto& n : s.names)
      if (n == name) return &s;
  return nullptr;
}

std::string ArgParser::help() const {
  // Every help text starts at this column (or a gap after a longer left part).
  constexpr size_t kColumn = 24;
  auto pad = [](const std::string& left, size_t min_gap = 2) {
    return left + std::string(left.size() < kColumn ? kColumn - left.size() : min_gap, ' ');
  };
  std::ostringstream out;
  out << "usage: " << program_ << " " << usage_ << "\n\n" << description_ << "\n";
  if (!positionals_.empty()) {
    out << "\narguments:\n";
    for (auto& p : positionals_) {
      out << pad("  " + p.metavar, 1) << p.help << "\n";
    }
  }
  out << "\noptions:\n";
  for (auto& s : specs_) {
    std::string left = "  ";
    for (size_t i = 0; i < s.names.size(); ++i) left += (i ? ", " : "") + s.names[i];
    if (s.takes_value) left += " " + s.metavar;
    // A help text of several lines keeps its column.
    std::string text = s.help;
    const std::string indent(kColumn, ' ');
    for (size_t at = text.find('\n'); at != std::string::npos; at = text.find('\n', at + 1 + kColumn))
      text.insert(at + 1, indent);
    out << pad(left) << text << "\n";
  }
  out << pad("  -h, --help") << "show this help\n";
  if (!epilog_.empty()) out << "\n" << epilog_ << "\n";
  return out.str();
}

bool ArgParser::parse(const std::vector<std::string>& args) {
  size_t next_positional = 0;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      std::fputs(help().c_str(), stdout);
      exit_code_ = 0;
      return false;
    }
    if (a.size() > 1 && a[0] == '-' && !(a.size() > 1 && (std::isdigit((unsigned char)a[1]) || a[1] == '.'))) {
      std::string name = a, value;
      bool inline_value = false;
      if (auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
        name = a.substr(0, eq);
        value = a.substr(eq + 1);
        inline_value = true;
      }
      Spec* s = find(name);
      if (!s) {
        std::fprintf(stderr, "%s: unknown option '%s' (see %s --help)\n", program_.c_str(),
                     name.c_str(), program_.c_str());
        exit_code_ = 2;
        return false;
      }
      if (s->takes_value && !inline_value) {
        if (i + 1 >= args.size()) {
          std::fprintf(stderr, "%s: option '%s' needs a value %s\n", program_.c_str(),
                       name.c_str(), s->metavar.c_str());
          exit_code_ = 2;
          return false;
        }
        value = args[++i];
      }
      if (!s->set(value)) {
        std::fprintf(stderr, "%s: invalid value '%s' for %s %s\n", program_.c_str(),
                     value.c_str(), name.c_str(), s->metavar.c_str());
        exit_code_ = 2;
        return false;
      }
      s->seen = true;
      continue;
    }
    if (next_positional >= positionals_.size()) {
      std::fprintf(stderr, "%s: unexpected argument '%s' (see %s --help)\n", program_.c_str(),
                   a.c_str(), program_.c_str());
      exit_code_ = 2;
      return false;
    }
    *positionals_[next_positional++].target = a;
  }
  for (size_t p = next_positional; p < positionals_.size(); ++p) {
    if (positionals_[p].required) {
      std::fprintf(stderr, "%s: missing %s (see %s --help)\n", program_.c_str(),
                   positionals_[p].metavar.c_str(), program_.c_str());
      exit_code_ = 2;
      return false;
    }
  }
  return true;
}

}  // namespace kiln::app
