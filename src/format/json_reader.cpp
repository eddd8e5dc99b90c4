#include "format/json_reader.hpp"

#include <cstring>
#include <limits>

namespace ckpt::format::json {

namespace {

bool is_digit(char c) noexcept {
  return static_cast<unsigned>(c - '0') <= 9;
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& s, std::uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

}  // namespace

bool reader::mismatch(std::string_view what) noexcept {
  const char c = p_ < end_ ? *p_ : '\0';
  if (c != '\0' && std::strchr("{[\"-0123456789tfn", c) != nullptr) {
    fault_ = fault::type;
    expected_ = what;
    return false;
  }
  return syntax(what);
}

bool reader::unescape(const char* start, std::string_view& out) {
  std::string s(start, static_cast<std::size_t>(p_ - start));
  auto hex4 = [&](std::uint32_t& v) {
    if (end_ - p_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex_value(p_[i]);
      if (h < 0) return false;
      v = v << 4 | static_cast<std::uint32_t>(h);
    }
    p_ += 4;
    return true;
  };
  while (p_ < end_) {
    const auto c = static_cast<unsigned char>(*p_);
    if (c == '"') {
      ++p_;
      out = unescaped_.emplace_back(std::move(s));
      return true;
    }
    if (c < 0x20) return syntax("no raw control character inside a string");
    ++p_;
    if (c != '\\') {
      s += static_cast<char>(c);
      continue;
    }
    if (p_ == end_) break;
    switch (*p_++) {
      case '"':
        s += '"';
        break;
      case '\\':
        s += '\\';
        break;
      case '/':
        s += '/';
        break;
      case 'b':
        s += '\b';
        break;
      case 'f':
        s += '\f';
        break;
      case 'n':
        s += '\n';
        break;
      case 'r':
        s += '\r';
        break;
      case 't':
        s += '\t';
        break;
      case 'u': {
        std::uint32_t cp;
        if (!hex4(cp)) return syntax("four hex digits after \\u");
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          std::uint32_t lo;
          if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') {
            return syntax("a \\u low surrogate after a high surrogate");
          }
          p_ += 2;
          if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) {
            return syntax("a \\u low surrogate after a high surrogate");
          }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
          return syntax("no lone low surrogate");
        }
        append_utf8(s, cp);
        break;
      }
      default:
        return syntax("a valid escape after '\\'");
    }
  }
  return syntax("'\"' closing a string");
}

bool reader::scan_number() noexcept {
  const char* q = p_;
  if (q < end_ && *q == '-') ++q;
  if (q == end_ || !is_digit(*q)) return syntax("a number");
  if (*q == '0') {
    ++q;
  } else {
    while (q < end_ && is_digit(*q))
      ++q;
  }
  if (q < end_ && *q == '.') {
    ++q;
    if (q == end_ || !is_digit(*q)) return syntax("digits after '.'");
    while (q < end_ && is_digit(*q))
      ++q;
  }
  if (q < end_ && (*q == 'e' || *q == 'E')) {
    ++q;
    if (q < end_ && (*q == '+' || *q == '-')) ++q;
    if (q == end_ || !is_digit(*q)) return syntax("digits in an exponent");
    while (q < end_ && is_digit(*q))
      ++q;
  }
  p_ = q;
  return true;
}

bool reader::i64(std::int64_t& out) noexcept {
  skip_ws();
  if (p_ == end_ || *p_ != '-') {
    std::uint64_t m = 0;
    if (!u64(m)) {
      if (fault_ == fault::type) expected_ = "an integer";
      return false;
    }
    if (m > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      fault_ = fault::out_of_range;
      return false;
    }
    out = static_cast<std::int64_t>(m);
    return true;
  }
  const char* start = p_++;
  if (p_ == end_ || !is_digit(*p_)) {
    p_ = start;
    return syntax("a number");
  }
  std::uint64_t m = 0;
  if (!u64(m)) return false;
  constexpr auto limit = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) + 1;
  if (m > limit) {
    fault_ = fault::out_of_range;
    return false;
  }
  out = m == limit ? std::numeric_limits<std::int64_t>::min() : -static_cast<std::int64_t>(m);
  return true;
}

bool reader::literal(std::string_view word) noexcept {
  if (static_cast<std::size_t>(end_ - p_) >= word.size() &&
      std::memcmp(p_, word.data(), word.size()) == 0) {
    p_ += word.size();
    return true;
  }
  return syntax(word);
}

bool reader::null() noexcept {
  skip_ws();
  if (p_ < end_ && *p_ == 'n') return literal("null");
  return mismatch("null");
}

bool reader::skip(std::uint32_t max_depth) {
  std::string open;  // '{' or '[' for each container we are inside
  std::string_view key;
  auto member_key = [&] {
    skip_ws();
    if (p_ == end_ || *p_ != '"') return syntax("a string key");
    if (!string(key)) return false;
    skip_ws();
    if (p_ == end_ || *p_ != ':') return syntax("':' after a key");
    ++p_;
    return true;
  };
  for (;;) {
    // A value.
    skip_ws();
    if (p_ == end_) return syntax("a value");
    const char c = *p_;
    if (c == '{' || c == '[') {
      if (open.size() >= max_depth) {
        fault_ = fault::too_deep;
        return false;
      }
      ++p_;
      skip_ws();
      if (p_ < end_ && *p_ == (c == '{' ? '}' : ']')) {
        ++p_;
      } else {
        open += c;
        if (c == '{' && !member_key()) return false;
        continue;
      }
    } else if (c == '"') {
      std::string_view s;
      if (!string(s)) return false;
    } else if (c == '-' || is_digit(c)) {
      if (!scan_number()) return false;
    } else if (c == 't') {
      if (!literal("true")) return false;
    } else if (c == 'f') {
      if (!literal("false")) return false;
    } else if (c == 'n') {
      if (!literal("null")) return false;
    } else {
      return syntax("a value");
    }
    // After a value: close containers until one has more.
    for (;;) {
      if (open.empty()) return true;
      skip_ws();
      const char close = open.back() == '{' ? '}' : ']';
      if (p_ < end_ && *p_ == close) {
        ++p_;
        open.pop_back();
        continue;
      }
      if (p_ < end_ && *p_ == ',') {
        ++p_;
        if (open.back() == '{' && !member_key()) return false;
        break;
      }
      return syntax(close == '}' ? "',' or '}'" : "',' or ']'");
    }
  }
}

}  // namespace ckpt::format::json
