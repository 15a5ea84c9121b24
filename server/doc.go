// Package server runs a call manager instance: the HTTPS server and its
// middleware, the agent and admin JSON APIs, the assignment long-poll hub
// woken by Postgres LISTEN/NOTIFY, leader election and the lifecycle that
// ties them to the portal (web) and the cluster domain (nodes).
package server
