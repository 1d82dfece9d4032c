/* pair_style e3gnn: SevenNet's serial pair style (compiled unmodified from the installed sevenn package)
   with the checks it lacks: one MPI rank only (pointing to e3gnn/parallel), the model file and the
   pair_coeff element list validated with clear messages before SevenNet loads the model, and what was
   loaded written to the LAMMPS log. */
#ifndef NLMD_PAIR_E3GNN_CHECKED_H
#define NLMD_PAIR_E3GNN_CHECKED_H

#include "pair_e3gnn.h"

namespace LAMMPS_NS {

class PairE3GNNChecked : public PairE3GNN {
 public:
  PairE3GNNChecked(class LAMMPS *);
  void coeff(int, char **) override;
  void init_style() override;

 private:
  void require_single_rank();
};

}    // namespace LAMMPS_NS

#endif
