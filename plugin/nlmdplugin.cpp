/* Registration of every pair style nlmd provides, from one shared object (nlmdplugin.so).
   LAMMPS auto-loads files ending in "plugin.so" from LAMMPS_PLUGIN_PATH. */
#include "lammpsplugin_abi.h"

#include "pair_e3gnn_checked.h"

using namespace LAMMPS_NS;

static Pair *e3gnn_creator(LAMMPS *lmp)
{
  return new PairE3GNNChecked(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  auto register_plugin = (lammpsplugin_regfunc) regfunc;
  lammpsplugin_t plugin;

  plugin.version = NLMD_LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "e3gnn";
  plugin.info = "e3gnn: SevenNet " NLMD_SEVENN_VERSION " serial pair style (nlmd plugin)";
  plugin.author = "nlmd developers; SevenNet pair style by Yutack Park (SNU)";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &e3gnn_creator;
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
