// A strict pull reader of JSON text (RFC 8259) for the index parser: a cursor the caller drives
// value by value, asking for the type it expects. It builds no document, allocates only for
// strings with escapes, and never recurses (skip() of unknown values keeps its own stack).
// UTF-8 is not checked here: the caller validates the whole text once, up front. The text must
// be followed by at least 16 readable bytes (strings are scanned 16 bytes at a time).
// Internal header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace ckpt::format::json {

/// Why a reader call returned false.
enum class fault : std::uint8_t {
  none,
  syntax,        ///< not JSON; expected() says what the reader wanted at offset()
  type,          ///< a JSON value of another type than the one asked for
  out_of_range,  ///< a number, but not an integer in the range asked for
  too_deep,      ///< skip(): nesting beyond its cap
};

class reader {
 public:
  reader(const char* data, std::size_t size) noexcept : p_(data), begin_(data), end_(data + size) {}

  void rewind() noexcept { p_ = begin_; }
  void seek(std::size_t offset) noexcept { p_ = begin_ + offset; }
  std::size_t offset() const noexcept { return static_cast<std::size_t>(p_ - begin_); }
  fault last_fault() const noexcept { return fault_; }
  /// For a syntax fault: what was expected at offset().
  std::string_view expected() const noexcept { return expected_; }

  /// The first byte of the next value (after whitespace), or '\0' at the end of the text.
  char peek() noexcept {
    skip_ws();
    return p_ < end_ ? *p_ : '\0';
  }
  /// Only whitespace left.
  bool at_end() noexcept {
    skip_ws();
    return p_ == end_;
  }

  bool begin_object() noexcept { return open('{', "an object"); }
  bool begin_array() noexcept { return open('[', "an array"); }
  /// The next member of an object opened by begin_object(): `more` is false (and the '}'
  /// consumed) when there is none; otherwise `key` is its key and the reader is at its value.
  /// `first` starts true and is kept by the reader.
  bool next_key(bool& first, bool& more, std::string_view& key);
  /// The next element of an array opened by begin_array(): `more` is false at the ']'.
  bool next_element(bool& first, bool& more) noexcept;

  /// A string. The view points into the text when the string has no escapes, else into storage
  /// owned by the reader (stable until the reader is destroyed).
  bool string(std::string_view& out);
  /// A non-negative integer that fits 64 bits (no fraction, no exponent).
  bool u64(std::uint64_t& out) noexcept;
  /// An integer that fits a signed 64 bits.
  bool i64(std::int64_t& out) noexcept;
  bool null() noexcept;
  /// Any value, containers nested at most `max_depth` deep.
  bool skip(std::uint32_t max_depth = 1024);

 private:
  static bool is_ws(char c) noexcept { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }
  const char* skip_ws(const char* p) const noexcept;
  void skip_ws() noexcept { p_ = skip_ws(p_); }
  bool open(char c, std::string_view what) noexcept {
    skip_ws();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return mismatch(what);
  }
  /// The next value is not what was asked for: a type fault when it starts like a JSON value,
  /// a syntax fault otherwise.
  bool mismatch(std::string_view what) noexcept;
  bool syntax(std::string_view what) noexcept {
    fault_ = fault::syntax;
    expected_ = what;
    return false;
  }
  bool unescape(const char* start, std::string_view& out);
  /// Scans a JSON number at p_ without converting it; false (syntax) if malformed.
  bool scan_number() noexcept;
  bool literal(std::string_view word) noexcept;

  const char* p_;
  const char* begin_;
  const char* end_;
  fault fault_ = fault::none;
  std::string_view expected_;
  std::deque<std::string> unescaped_;
};

// The hot functions below work on a local copy of p_: a char read may alias the member, so
// reading through the member would make the compiler store and reload it around every byte.
// They are always inlined into the index walkers (~5 % of the parse).

inline const char* reader::skip_ws(const char* p) const noexcept {
  // (Every byte that starts a token is above ' ': one compare in the common case.)
  while (p < end_ && static_cast<unsigned char>(*p) <= ' ' && is_ws(*p))
    ++p;
  return p;
}

// (next_element and next_key spell out the same separator logic: a shared helper taking the
// position by reference measured ~5 % slower on the whole index parse.)
[[gnu::always_inline]] inline bool reader::next_element(bool& first, bool& more) noexcept {
  const char* p = skip_ws(p_);
  const char c = p < end_ ? *p : '\0';
  if (c == ']') {
    p_ = p + 1;
    first = false;
    more = false;
    return true;
  }
  if (first) {
    first = false;
  } else if (c == ',') {
    ++p;
  } else {
    p_ = p;
    return syntax("',' or ']'");
  }
  p_ = p;
  more = true;
  return true;
}

[[gnu::always_inline]] inline bool reader::next_key(bool& first, bool& more,
                                                    std::string_view& key) {
  const char* p = skip_ws(p_);
  const char c = p < end_ ? *p : '\0';
  if (c == '}') {
    p_ = p + 1;
    first = false;
    more = false;
    return true;
  }
  if (first) {
    first = false;
  } else if (c == ',') {
    p = skip_ws(p + 1);
  } else {
    p_ = p;
    return syntax("',' or '}'");
  }
  p_ = p;
  if (p == end_ || *p != '"') return syntax("a string key");
  if (!string(key)) return false;
  p = skip_ws(p_);
  if (p == end_ || *p != ':') {
    p_ = p;
    return syntax("':' after a key");
  }
  p_ = p + 1;
  more = true;
  return true;
}

[[gnu::always_inline]] inline bool reader::string(std::string_view& out) {
  const char* p = skip_ws(p_);
  if (p == end_ || *p != '"') {
    p_ = p;
    return mismatch("a string");
  }
  const char* start = ++p;
#if defined(__SSE2__)
  // 16 bytes at a time: the text is followed by at least 16 readable bytes (see the class).
  const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'),
                control = _mm_set1_epi8(0x1f);
  for (;;) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i hit =
        _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                     _mm_cmpeq_epi8(_mm_max_epu8(v, control), control));  // byte <= 0x1f
    const unsigned mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
    if (mask != 0) {
      p += __builtin_ctz(mask);
      break;
    }
    p += 16;
    if (p >= end_) break;
  }
  if (p >= end_) {
    p_ = end_;
    return syntax("'\"' closing a string");
  }
#else
  while (p < end_ && *p != '"' && *p != '\\' && static_cast<unsigned char>(*p) >= 0x20)
    ++p;
  if (p == end_) {
    p_ = p;
    return syntax("'\"' closing a string");
  }
#endif
  p_ = p;
  if (*p == '"') {
    out = std::string_view(start, static_cast<std::size_t>(p - start));
    p_ = p + 1;
    return true;
  }
  if (*p == '\\') return unescape(start, out);
  return syntax("no raw control character inside a string");
}

[[gnu::always_inline]] inline bool reader::u64(std::uint64_t& out) noexcept {
  const char* q = skip_ws(p_);
  p_ = q;
  if (q == end_ || static_cast<unsigned>(*q - '0') > 9) return mismatch("a non-negative integer");
  std::uint64_t v = static_cast<std::uint64_t>(*q++ - '0');
  if (v != 0) {
    while (q < end_ && static_cast<unsigned>(*q - '0') <= 9) {
      const auto d = static_cast<std::uint64_t>(*q - '0');
      if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, d, &v)) {
        if (!scan_number()) return false;
        fault_ = fault::out_of_range;
        return false;
      }
      ++q;
    }
  }
  if (q < end_ && (*q == '.' || *q == 'e' || *q == 'E')) {
    if (!scan_number()) return false;
    fault_ = fault::out_of_range;
    return false;
  }
  p_ = q;
  out = v;
  return true;
}

}  // namespace ckpt::format::json
