/* What nlmd's SevenNet pair styles (e3gnn, e3gnn/parallel) share: everything on the LAMMPS side of the model
   call. A many-body style with one `pair_coeff * * <model> <elements>`, no single(), no restart data; the
   type map (atom type -> model species) and the per-type arrays; the choice of device; the graph built from
   the full neighbour list; the energy, forces and virial tallied from d(energy)/d(edge vector) (not fdotr);
   and the one place where a model failure becomes a LAMMPS error with the model's message. The model call
   itself is in classes without LAMMPS (e3gnn_model.h), as DeePMD-kit keeps DeepPot behind its
   PairDeepBaseModel; a style adds its syntax, its model class and, for e3gnn/parallel, the exchange. */
#ifndef NLMD_PAIR_E3GNN_BASE_H
#define NLMD_PAIR_E3GNN_BASE_H

#include "e3gnn_model.h"
#include "error.h"
#include "model_metadata.h"
#include "pair.h"

#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairE3GNNBase : public Pair {
 public:
  PairE3GNNBase(class LAMMPS *, const char *style);
  ~PairE3GNNBase() override;
  double init_one(int, int) override;

 protected:
  const std::string style;    // "e3gnn", "e3gnn/parallel": the name in every message
  double cutoff = 0.0;
  nlmd::Graph graph;          // this step's graph (build_graph)
  std::vector<int> node_atom;    // graph node -> the LAMMPS atom its forces go to
  nlmd::Evaluation result;    // this step's model output (tally), buffers reused from step to step

  void allocate();

  /* After the elements were checked against the model (one per atom type): map (atom type -> model
     species index), the cutoff, setflag and cutsq. Returns the types for the log, " 1=Sr 2=O". */
  std::string set_types(const nlmd::ModelMetadata &meta, const std::vector<std::string> &elements);
  // the model species of atom types 1..ntypes
  std::vector<int64_t> type_species() const;

  /* One GPU per MPI rank when torch sees CUDA, chosen by the rank's index among the ranks of its node (a
     collective call); else the CPU. `description` says which, for the log. */
  nlmd::Device select_device(std::string &description);

  /* The graph of this step from the full neighbour list, every pair closer than the model cutoff an edge.
     FOLD_GHOSTS: the nodes are the atoms of the list, in its order, and a ghost neighbour is folded onto the
     local atom it images (by tag), so one rank holds the whole periodic system and small cells and
     non-consecutive ids work. GHOST_NODES: the nodes are the local atoms (node = LAMMPS index), then every
     ghost atom that is a neighbour, in order of first appearance, each periodic image its own node. */
  enum GhostPolicy { FOLD_GHOSTS, GHOST_NODES };
  void build_graph(GhostPolicy policy);

  /* Energy, per-atom energy, forces and virial of `result` for `graph`. With r = x_dst - x_src on each edge:
     F_src += dE/dr, F_dst -= dE/dr, W_ab = -sum_edges r_a dE/dr_b, per atom on dst; forces on ghost atoms
     reach their owners through LAMMPS's reverse communication (newton on). */
  void tally();

  /* Runs `fn`, a call into a model class; a nlmd::ModelError it throws becomes error->all (`everywhere`:
     every rank fails the same way) or error->one, reading "<what(file)>: <torch's message>", or
     "pair_style <style>: <sentence>" when the model's message is a sentence of its own. */
  template <typename Fn, typename What> void call_model(bool everywhere, What &&what, Fn &&fn)
  {
    try {
      fn();
    } catch (const nlmd::ModelError &e) {
      const std::string msg =
          e.sentence() ? "pair_style " + style + ": " + e.what() : what(e.file()) + ": " + e.what();
      if (everywhere) error->all(FLERR, msg);
      error->one(FLERR, msg);
    }
  }

 private:
  std::vector<int> local_of_tag;    // FOLD_GHOSTS: atom tag -> node
  std::vector<int> ghost_node;      // GHOST_NODES: ghost atom (index - nlocal) -> node, -1: none yet
};

}    // namespace LAMMPS_NS

#endif
