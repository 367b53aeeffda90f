// The sensor-reading model shared by the C++ processors: the C++ port of
// plugins/rust/readings (its crate docs are the rule). Header only.
//
// - parse_json reads JSON strictly, as serde_json does (RFC 8259, numbers
//   correctly rounded with strtod, invalid UTF-8, lone surrogate escapes,
//   numbers too large for a double and more than 127 levels refused).
// - put_number writes a double as ECMAScript's Number::toString does
//   (std::to_chars gives the shortest digits).
// - put_string writes a JSON string as serde_json does.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace readings {

/// A JSON value; arrays are validated but not kept.
struct Value {
  enum class Kind { Null, Bool, Number, String, Array, Object } kind = Kind::Null;
  double number = 0;
  std::string str;
  std::vector<std::pair<std::string, Value>> members;  // in order; repeated keys kept

  /// The last member called `key` (of repeated keys the last wins), or nullptr.
  const Value* get(std::string_view key) const {
    for (auto it = members.rbegin(); it != members.rend(); ++it)
      if (it->first == key) return &it->second;
    return nullptr;
  }
  /// Members with repeated keys reduced to the last, sorted by key bytes.
  std::map<std::string, const Value*> last_members() const {
    std::map<std::string, const Value*> m;
    for (const auto& [k, v] : members) m[k] = &v;
    return m;
  }
};

class Parser {
 public:
  explicit Parser(std::string_view s) : p_(s.data()), end_(s.data() + s.size()) {}

  std::optional<Value> parse() {
    Value v;
    ws();
    if (!value(v, 0)) return std::nullopt;
    ws();
    if (p_ != end_) return std::nullopt;
    return v;
  }

 private:
  const char* p_;
  const char* end_;

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  unsigned char peek() const { return p_ < end_ ? static_cast<unsigned char>(*p_) : 0; }

  static int hex4(const char* p) {
    int v = 0;
    for (int i = 0; i < 4; i++) {
      char c = p[i];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }

  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  size_t valid_utf8() const {
    auto u = [&](size_t i) { return static_cast<unsigned char>(p_[i]); };
    unsigned c = u(0);
    size_t n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07, min = 0x10000;
    else return 0;
    if (static_cast<size_t>(end_ - p_) < n) return 0;
    for (size_t i = 1; i < n; i++) {
      if ((u(i) & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (u(i) & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return n;
  }

  bool string(std::string& out) {
    ++p_;
    for (;;) {
      if (p_ >= end_) return false;
      unsigned char c = peek();
      if (c == '"') {
        ++p_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (end_ - p_ < 2) return false;
        char e = p_[1];
        p_ += 2;
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            if (end_ - p_ < 4) return false;
            int u = hex4(p_);
            if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF)) return false;
            p_ += 4;
            uint32_t cp = static_cast<uint32_t>(u);
            if (u >= 0xD800 && u <= 0xDBFF) {
              if (end_ - p_ < 6 || p_[0] != '\\' || p_[1] != 'u') return false;
              int lo = hex4(p_ + 2);
              if (lo < 0xDC00 || lo > 0xDFFF) return false;
              p_ += 6;
              cp = 0x10000 + ((cp - 0xD800) << 10) + (static_cast<uint32_t>(lo) - 0xDC00);
            }
            utf8(out, cp);
            break;
          }
          default: return false;
        }
        continue;
      }
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++p_;
        continue;
      }
      size_t n = valid_utf8();
      if (!n) return false;
      out.append(p_, n);
      p_ += n;
    }
  }

  bool number(double& out) {
    const char* s = p_;
    if (peek() == '-') ++p_;
    if (peek() == '0') {
      ++p_;
    } else if (peek() >= '1' && peek() <= '9') {
      while (peek() >= '0' && peek() <= '9') ++p_;
    } else {
      return false;
    }
    if (peek() == '.') {
      ++p_;
      const char* d = p_;
      while (peek() >= '0' && peek() <= '9') ++p_;
      if (p_ == d) return false;
    }
    if (peek() == 'e' || peek() == 'E') {
      ++p_;
      if (peek() == '+' || peek() == '-') ++p_;
      const char* d = p_;
      while (peek() >= '0' && peek() <= '9') ++p_;
      if (p_ == d) return false;
    }
    std::string text(s, p_);
    out = std::strtod(text.c_str(), nullptr);
    return !std::isinf(out);
  }

  bool literal(std::string_view word) {
    if (static_cast<size_t>(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }

  bool value(Value& v, int depth) {
    switch (peek()) {
      case '{': {
        if (depth + 1 >= 128) return false;  // serde_json: 127 levels at most
        v.kind = Value::Kind::Object;
        ++p_;
        ws();
        if (peek() == '}') return ++p_, true;
        for (;;) {
          ws();
          if (peek() != '"') return false;
          std::string key;
          if (!string(key)) return false;
          ws();
          if (peek() != ':') return false;
          ++p_;
          ws();
          Value m;
          if (!value(m, depth + 1)) return false;
          v.members.emplace_back(std::move(key), std::move(m));
          ws();
          if (peek() == ',') {
            ++p_;
            continue;
          }
          if (peek() == '}') return ++p_, true;
          return false;
        }
      }
      case '[': {
        if (depth + 1 >= 128) return false;
        v.kind = Value::Kind::Array;
        ++p_;
        ws();
        if (peek() == ']') return ++p_, true;
        for (;;) {
          ws();
          Value item;
          if (!value(item, depth + 1)) return false;
          ws();
          if (peek() == ',') {
            ++p_;
            continue;
          }
          if (peek() == ']') return ++p_, true;
          return false;
        }
      }
      case '"':
        v.kind = Value::Kind::String;
        return string(v.str);
      case 't': v.kind = Value::Kind::Bool; return literal("true");
      case 'f': v.kind = Value::Kind::Bool; return literal("false");
      case 'n': v.kind = Value::Kind::Null; return literal("null");
      default:
        v.kind = Value::Kind::Number;
        return number(v.number);
    }
  }
};

inline std::optional<Value> parse_json(std::string_view text) { return Parser(text).parse(); }

/// Rust's `str::parse::<f64>` grammar (no trimming), finite only.
inline std::optional<double> parse_f64_strict(std::string_view s) {
  size_t i = 0, digits = 0;
  auto is_digit = [&](size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '9'; };
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
  while (is_digit(i)) i++, digits++;
  if (i < s.size() && s[i] == '.') {
    i++;
    while (is_digit(i)) i++, digits++;
  }
  if (!digits) return std::nullopt;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) i++;
    size_t e = 0;
    while (is_digit(i)) i++, e++;
    if (!e) return std::nullopt;
  }
  if (i != s.size()) return std::nullopt;
  double x = std::strtod(std::string(s).c_str(), nullptr);
  if (!std::isfinite(x)) return std::nullopt;
  return x;
}

/// A number written as text (readings::parse_number_text).
inline std::optional<double> parse_number_text(std::string_view s) {
  auto ws = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\r'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return parse_f64_strict(s);
}

/// Appends `x` in the canonical form (JavaScript's String(x)), or null.
inline void put_number(std::string& out, std::optional<double> value) {
  if (!value || !std::isfinite(*value)) {
    out += "null";
    return;
  }
  double x = *value;
  if (x == 0) {
    out += '0';
    return;
  }
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(r.ptr - buf));
  if (sci.front() == '-') {
    out += '-';
    sci.remove_prefix(1);
  }
  size_t e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e))
    if (c != '.') digits += c;
  int n = std::atoi(std::string(sci.substr(e + 1)).c_str()) + 1;
  int k = static_cast<int>(digits.size());
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out.append(digits, 0, static_cast<size_t>(n));
    out += '.';
    out.append(digits, static_cast<size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<size_t>(-n), '0');
    out += digits;
  } else {
    out += digits[0];
    if (k > 1) {
      out += '.';
      out.append(digits, 1);
    }
    out += n > 0 ? "e+" : "e-";
    out += std::to_string(std::abs(n - 1));
  }
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it.
inline void put_string(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace readings
