// Added tokens ("<|im_start|>", "<think>", Llama 3's header ids) are found in
// the text before anything else, as Hugging Face does: leftmost match first,
// the longest token at that position, and the text between goes to the model.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;  // only matched when special tokens are parsed
  bool lstrip = false;   // swallows whitespace on its left
  bool rstrip = false;   // ...and on its right
};

struct Fragment {
  int32_t id;           // the added token, or -1 for text
  uint32_t begin, end;  // the text's byte range (for id == -1)
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken& token);
  bool empty() const { return tokens_.empty(); }
  // Splits text into added tokens and the text around them. Special tokens
  // are matched only if parse_special; other added tokens always are.
  void split(std::string_view text, bool parse_special, std::vector<Fragment>& out) const;

 private:
  std::vector<AddedToken> tokens_;
  // Per first byte, indices into tokens_, longest content first.
  std::vector<std::vector<uint32_t>> by_first_byte_ = std::vector<std::vector<uint32_t>>(256);
};

}  // namespace kiln
