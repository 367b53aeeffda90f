// Connects tidewater.js to the host inside the component: imported first by
// the entry module that `make plugins` generates for each JS processor.
import * as stateHost from "tidewater:processor/state@0.1.0";
import * as logHost from "tidewater:processor/log@0.1.0";
import { install } from "./tidewater.js";

install({
  state: stateHost,
  log: (level, message) => logHost.log(level, message),
});
