// format::json::reader, the pull reader under the index parser: JSON grammar, escapes, numbers,
// nesting, and agreement with simdjson on what is JSON.
#include "format/json_reader.hpp"

#include <simdjson.h>
#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace json = ckpt::format::json;

namespace {

/// The text plus the 16 readable bytes the reader may look at past its end.
struct padded {
  explicit padded(std::string s) : n(s.size()), text(std::move(s) + std::string(64, 'x')) {}
  json::reader reader() const { return json::reader(text.data(), n); }
  std::size_t n;
  std::string text;
};

/// Whole-text validity as the reader sees it: one value, then only whitespace.
bool reader_accepts(const std::string& s) {
  padded p(s);
  auto r = p.reader();
  return r.skip() && r.at_end();
}

bool simdjson_accepts(const std::string& s) {
  simdjson::dom::parser parser;
  simdjson::padded_string ps(s);
  simdjson::dom::element e;
  return parser.parse(ps).get(e) == simdjson::SUCCESS;
}

}  // namespace

TEST_CASE("json reader: strings, escapes and surrogate pairs", "[format][json]") {
  struct ok_case {
    std::string text, value;
  };
  const std::vector<ok_case> ok = {
      {R"("plain")", "plain"},
      {R"("")", ""},
      {R"(  "spaced"  )", "spaced"},
      {R"("q\"b\\s\/")", "q\"b\\s/"},
      {R"("\b\f\n\r\t")", "\b\f\n\r\t"},
      {R"("\u0041\u00e9\u20AC")", "A\xc3\xa9\xe2\x82\xac"},
      {R"("\ud83d\ude00")", "\xf0\x9f\x98\x80"},
      {R"("a\u0000b")", std::string("a\0b", 3)},
      {"\"" + std::string(100, 'k') + "\\n\"", std::string(100, 'k') + "\n"},
      {"\"\xc3\xa9t\xc3\xa9\"", "\xc3\xa9t\xc3\xa9"},
  };
  for (const auto& c : ok) {
    INFO(c.text);
    padded p(c.text);
    auto r = p.reader();
    std::string_view v;
    REQUIRE(r.string(v));
    CHECK(v == c.value);
    CHECK(r.at_end());
  }
  for (std::string bad :
       {R"("open)", R"("\x")", R"("\u12")", R"("\ud83d")", R"("\ud83dx")", R"("\ude00")",
        R"("\ud83d\u0041")", "\"tab\there\"", "\"nl\nhere\"", R"("\)"}) {
    INFO(bad);
    padded p(bad);
    auto r = p.reader();
    std::string_view v;
    CHECK_FALSE(r.string(v));
    CHECK(r.last_fault() == json::fault::syntax);
  }
  padded p("17");
  auto r = p.reader();
  std::string_view v;
  CHECK_FALSE(r.string(v));
  CHECK(r.last_fault() == json::fault::type);
}

TEST_CASE("json reader: integers and their ranges", "[format][json]") {
  auto u = [](const std::string& s, std::uint64_t& out) {
    padded p(s);
    auto r = p.reader();
    const bool ok = r.u64(out);
    return std::pair{ok, r.last_fault()};
  };
  std::uint64_t x = 0;
  CHECK(u("0", x).first);
  CHECK(x == 0);
  CHECK(u(" 18446744073709551615 ", x).first);
  CHECK(x == std::numeric_limits<std::uint64_t>::max());
  CHECK(u("18446744073709551616", x).second == json::fault::out_of_range);
  CHECK(u("99999999999999999999999", x).second == json::fault::out_of_range);
  CHECK(u("1.5", x).second == json::fault::out_of_range);
  CHECK(u("1e3", x).second == json::fault::out_of_range);
  CHECK(u("-1", x).second == json::fault::type);
  CHECK(u("\"1\"", x).second == json::fault::type);
  CHECK(u("1.", x).second == json::fault::syntax);
  CHECK(u("1e", x).second == json::fault::syntax);
  CHECK(u("x", x).second == json::fault::syntax);

  auto i = [](const std::string& s, std::int64_t& out) {
    padded p(s);
    auto r = p.reader();
    const bool ok = r.i64(out);
    return std::pair{ok, r.last_fault()};
  };
  std::int64_t y = 0;
  CHECK(i("-9223372036854775808", y).first);
  CHECK(y == std::numeric_limits<std::int64_t>::min());
  CHECK(i("9223372036854775807", y).first);
  CHECK(y == std::numeric_limits<std::int64_t>::max());
  CHECK(i("-12", y).first);
  CHECK(y == -12);
  CHECK(i("9223372036854775808", y).second == json::fault::out_of_range);
  CHECK(i("-9223372036854775809", y).second == json::fault::out_of_range);
  CHECK(i("-", y).second == json::fault::syntax);
  CHECK(i("-2.5", y).second == json::fault::out_of_range);
}

TEST_CASE("json reader: objects and arrays, member by member", "[format][json]") {
  padded p(R"( { "a" : [ 1 , 2 ] , "b" : { } , "c" : [ ] } )");
  auto r = p.reader();
  REQUIRE(r.begin_object());
  bool first = true, more;
  std::string_view key;
  std::vector<std::string> keys;
  std::vector<std::uint64_t> numbers;
  for (;;) {
    REQUIRE(r.next_key(first, more, key));
    if (!more) break;
    keys.emplace_back(key);
    if (key == "a") {
      REQUIRE(r.begin_array());
      bool afirst = true, amore;
      for (;;) {
        REQUIRE(r.next_element(afirst, amore));
        if (!amore) break;
        std::uint64_t n = 0;
        REQUIRE(r.u64(n));
        numbers.push_back(n);
      }
    } else {
      REQUIRE(r.skip());
    }
  }
  CHECK(r.at_end());
  CHECK(keys == std::vector<std::string>{"a", "b", "c"});
  CHECK(numbers == std::vector<std::uint64_t>{1, 2});
}

TEST_CASE("json reader: skip keeps its own stack and caps nesting", "[format][json]") {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  padded p(deep);
  auto r = p.reader();
  CHECK_FALSE(r.skip(1024));
  CHECK(r.last_fault() == json::fault::too_deep);
  auto r2 = p.reader();
  CHECK(r2.skip(200000));
  CHECK(r2.at_end());
}

TEST_CASE("json reader agrees with simdjson on what is JSON", "[format][json]") {
  const std::vector<std::string> texts = {
      "null", "true", "false", "0", "-0", "12", "-12.5e+3", "1E-2", "0.0", "\"s\"", "[]", "{}",
      "[1,2,[3,{\"a\":null}]]", " \t\n\r[ 1 ]\n", "{\"a\":1,\"a\":2}", "[\"\\u00e9\"]",
      // not JSON
      "", " ", "nul", "tru", "falsey", "01", "-", "+1", "1.", ".5", "1e", "1e+", "[1,]", "[,1]",
      "[1 2]", "{\"a\"}", "{\"a\":}", "{\"a\":1,}", "{a:1}", "{\"a\":1", "[", "]", "\"", "[1]]",
      "{}{}", "[\"\\q\"]", "[\"a\x01\"]", "\"\\ud800\"", "'s'", "NaN", "Infinity", "[1,2", "{,}",
      "[--1]", "[0x10]", "[1.e5]", "{\"a\" 1}", "[true false]", "\"\\u00\"", "[01]", "[-01]"};
  for (const auto& t : texts) {
    INFO("text: " << t);
    CHECK(reader_accepts(t) == simdjson_accepts(t));
  }
}
