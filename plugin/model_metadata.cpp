#include "model_metadata.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <fstream>
#include <sstream>
#include <stdexcept>

namespace nlmd {

bool is_aoti_package(const std::string &path)
{
  return path.size() > 4 && path.compare(path.size() - 4, 4, ".pt2") == 0;
}

std::string ModelMetadata::get(const std::string &key, const std::string &fallback) const
{
  auto it = fields.find(key);
  return it == fields.end() ? fallback : it->second;
}

ModelMetadata read_model_metadata(const std::string &path)
{
  {
    std::ifstream probe(path, std::ios::binary);
    if (!probe.good()) throw std::runtime_error("the model file " + path + " does not exist or cannot be read");
  }
  ModelMetadata meta;
  meta.path = path;
  if (is_aoti_package(path)) {
    try {
      for (const auto &[key, value] : torch::inductor::AOTIModelPackageLoader::load_metadata_from_package(path, "model"))
        meta.fields[key] = value;
    } catch (const std::exception &e) {
      throw std::runtime_error(path + " is not an AOTInductor package (" + std::string(e.what()).substr(0, 200) +
                               ")");
    }
    const std::string format = meta.get("nlmd_format", "");
    if (format != kAotiFormat && format != kAotiLayerFormat)
      throw std::runtime_error(path + " has nlmd_format '" + format + "', expected '" + kAotiFormat + "' (or '" +
                               kAotiLayerFormat + "' for a layer): compile it with `nlmd deploy --aot` of this "
                               "nlmd version");
  } else {
    try {
      caffe2::serialize::PyTorchStreamReader reader(path);
      for (const char *key : {"chemical_symbols_to_index", "cutoff", "num_species", "model_type", "version",
                              "dtype", "time", "oeq", "flashTP", "comm_size"}) {
        const std::string record = std::string("extra/") + key;
        if (!reader.hasRecord(record)) continue;
        auto [data, size] = reader.getRecord(record);
        meta.fields[key] = std::string(static_cast<const char *>(data.get()), size);
      }
    } catch (const std::exception &e) {
      throw std::runtime_error(path + " is not a TorchScript archive (" + std::string(e.what()).substr(0, 200) +
                               ")");
    }
  }
  for (const char *key : {"cutoff", "chemical_symbols_to_index", "model_type"}) {
    if (!meta.fields.count(key))
      throw std::runtime_error(path + " has no SevenNet metadata field '" + key +
                               "'; deploy the checkpoint with `nlmd deploy` (or sevenn_get_model)");
  }
  try {
    meta.cutoff = std::stod(meta.fields["cutoff"]);
  } catch (const std::exception &) {
    throw std::runtime_error(path + ": metadata field 'cutoff' is '" + meta.fields["cutoff"] +
                             "', expected a number in Angstrom");
  }
  std::istringstream species(meta.fields["chemical_symbols_to_index"]);
  for (std::string s; species >> s;) meta.species.push_back(s);
  return meta;
}

std::string check_species(const ModelMetadata &meta, const std::vector<std::string> &requested)
{
  for (size_t i = 0; i < requested.size(); ++i) {
    bool found = false;
    for (const auto &s : meta.species) found = found || (s == requested[i]);
    if (!found) {
      std::string known;
      if (meta.species.size() <= 20) {
        for (const auto &s : meta.species) known += " " + s;
      } else {
        known = " " + std::to_string(meta.species.size()) + " elements";
      }
      return "element '" + requested[i] + "' (atom type " + std::to_string(i + 1) + ") is not in the model " +
          meta.path + ", which knows:" + known;
    }
  }
  return "";
}

std::string check_serial_coeff(const ModelMetadata &meta, const std::vector<std::string> &elements, int ntypes,
                               const std::string &style)
{
  if (meta.get("model_type") != "E3_equivariant_model")
    return "pair_style " + style + ": " + meta.path + " has model_type '" + meta.get("model_type") +
        "', expected 'E3_equivariant_model'";
  if (!meta.get("comm_size", "").empty() || meta.get("nlmd_format", "") == kAotiLayerFormat)
    return "pair_style " + style + ": " + meta.path +
        " is one layer of a parallel deployment; use pair_style e3gnn/parallel, or deployed_serial.pt with " + style;
  if ((int) elements.size() != ntypes)
    return "pair_coeff " + style + " lists " + std::to_string(elements.size()) + " element(s) but the system has " +
        std::to_string(ntypes) + " atom type(s): give exactly one element per atom type, in type order";
  const std::string bad = check_species(meta, elements);
  if (!bad.empty()) return "pair_coeff " + style + ": " + bad;
  return "";
}

std::string parse_serial_coeff(int narg, char **arg, int ntypes, const std::string &style, ModelMetadata &meta,
                               std::vector<std::string> &elements)
{
  if (narg < 4 || std::string(arg[0]) != "*" || std::string(arg[1]) != "*")
    return "Incorrect pair_coeff for " + style +
        ": expected `pair_coeff * * <deployed_serial.pt> <element of type 1> <element of type 2> ...`";
  try {
    meta = read_model_metadata(arg[2]);
  } catch (const std::exception &e) {
    return "pair_style " + style + " cannot use the model: " + e.what();
  }
  elements.assign(arg + 3, arg + narg);
  return check_serial_coeff(meta, elements, ntypes, style);
}

}    // namespace nlmd
