/* Read the metadata SevenNet stores in a deployed TorchScript file (its `_extra_files`), or nlmd in an
   AOTInductor package, without loading the model, and check a pair_coeff element list against it. Errors come back as sentences. */
#ifndef NLMD_MODEL_METADATA_H
#define NLMD_MODEL_METADATA_H

#include <map>
#include <string>
#include <vector>

namespace nlmd {

// The calling convention of the AOTInductor packages `nlmd deploy --aot` writes (python/nlmd/aot.py)
inline constexpr const char *kAotiFormat = "nlmd-e3gnn-aoti-1";
// ... and of the per-layer packages of e3gnn/parallel (python/nlmd/aot_layers.py)
inline constexpr const char *kAotiLayerFormat = "nlmd-e3gnn-parallel-aoti-1";

// true for a file named *.pt2 (an AOTInductor package), false for a TorchScript archive
bool is_aoti_package(const std::string &path);

struct ModelMetadata {
  std::string path;
  std::map<std::string, std::string> fields;  // raw `_extra_files` entries
  std::vector<std::string> species;           // chemical_symbols_to_index, in model order
  double cutoff = 0.0;

  std::string get(const std::string &key, const std::string &fallback = "?") const;
};

// Throws std::runtime_error with a sentence naming the file when it is missing, is not a TorchScript
// archive (or, for *.pt2, an nlmd AOTInductor package), or lacks the SevenNet metadata (cutoff,
// chemical_symbols_to_index, model_type).
ModelMetadata read_model_metadata(const std::string &path);

// Returns "" when every requested element is in the model, else a sentence naming the first that is not.
std::string check_species(const ModelMetadata &meta, const std::vector<std::string> &requested);

// Checks a serial deployment (deployed_serial.pt) against a pair_coeff element list for pair style
// `style`: a SevenNet E3_equivariant_model, not a layer of a parallel deployment, one element per atom
// type, every element in the model. Returns "" when usable, else a sentence naming what is wrong.
std::string check_serial_coeff(const ModelMetadata &meta, const std::vector<std::string> &elements, int ntypes,
                               const std::string &style);

// Parses `pair_coeff * * <deployed_serial.pt> <element of type 1> ...` for serial style `style`: reads the
// model's metadata into `meta`, the element list into `elements`, and runs check_serial_coeff().
// Returns "" when usable, else a sentence.
std::string parse_serial_coeff(int narg, char **arg, int ntypes, const std::string &style, ModelMetadata &meta,
                               std::vector<std::string> &elements);

}    // namespace nlmd

#endif
